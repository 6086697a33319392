"""Models and tokenizers: build a tiny GPT-2 + tokenizer for the offline miniature, or load
any HF causal-LM folder, through one code path (``from_pretrained`` / ``save_pretrained``).

Only safetensors weights are accepted and ``trust_remote_code`` is off unless asked for.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import torch
from safetensors import SafetensorError
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from leakk.core.errors import ParamsError
from leakk.core.io import atomic_path, check_model_dir, corrupt_folder, record_execution
from leakk.determinism import apply_threads

apply_threads(torch)  # the thread count `leakk --threads` pinned before torch loaded

SPECIAL_TOKENS = {"pad_token": "<pad>", "eos_token": "<eos>", "bos_token": "<bos>", "unk_token": "<unk>"}


def build_tokenizer(texts: Iterable[str], vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """Train a small BPE tokenizer on ``texts``; decoding reproduces the text exactly.

    Words are pre-split on spaces (Metaspace) and punctuation, so invented names decompose
    into syllable-like pieces that models trained with and without an author both know.
    """
    tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Metaspace(), pre_tokenizers.Punctuation(behavior="isolated")]
    )
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS.values()), show_progress=False
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)


def build_gpt2(tokenizer: PreTrainedTokenizerFast, arch: dict[str, Any], seed: int) -> GPT2LMHeadModel:
    """A randomly initialised GPT-2 sized by ``arch`` (n_layer, n_embd, n_head, n_positions)."""
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **arch,
    )
    return GPT2LMHeadModel(config)


def load_model(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    trust_remote_code: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """Load a causal LM and its tokenizer from a local folder (safetensors only)."""
    path = check_model_dir(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            path, use_safetensors=True, trust_remote_code=trust_remote_code,
            **({"dtype": dtype} if dtype is not None else {}),
        )
    except (SafetensorError, OSError, ValueError, RuntimeError, KeyError, TypeError, AttributeError) as exc:
        # a truncated safetensors file, a broken config.json or tokenizer: name the folder
        raise corrupt_folder(path, exc, ("finetune", "unlearn", "rule_round")) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device), tokenizer


def save_model(model: PreTrainedModel, tokenizer, path: str | os.PathLike, extra: dict | None = None) -> None:
    """Save model + tokenizer atomically (a temp folder renamed into place), safetensors only.

    ``extra`` maps file names to callables ``fn(tmp_path)`` writing more files (e.g. logs)
    into the folder before it is renamed, so the folder appears complete or not at all.
    """
    with atomic_path(path, is_dir=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        for name, write in (extra or {}).items():
            write(tmp / name)


def max_positions(model) -> int | None:
    """The most tokens (prompt + completion) the model can attend to, where its config says."""
    cfg = model.config.get_text_config()
    return getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)


def pick_device(requested: str = "auto") -> torch.device:
    """``auto`` → CUDA if available, else CPU; a device this machine lacks is one
    ``ParamsError`` line (not a CUDA traceback midway through a stage)."""
    if requested == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        record_execution(device_used=str(dev))
        return dev
    try:
        dev = torch.device(requested)
    except RuntimeError:
        raise ParamsError(f"device: {requested!r} is not a torch device (auto | cpu | cuda | cuda:N | mps)") from None
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise ParamsError(f"device: {requested!r}: this machine has {torch.cuda.device_count()} usable CUDA "
                          "device(s) (use auto or cpu)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ParamsError(f"device: {requested!r}: MPS is not available on this machine (use auto or cpu)")
    record_execution(device_used=str(dev))
    return dev


