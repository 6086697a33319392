"""Fine-tuning: the full target model (all QA) and the retrain baseline (retain QA only).

From scratch (the offline miniature: tokenizer + GPT-2 built from ``model.arch``) or from an
existing HF folder (``model.base``), through the same training loop.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import polars as pl
import torch

from leakk.data import training_column
from leakk.core.errors import ParamsError
from leakk.core.io import write_frame
from leakk.models.modeling import build_gpt2, build_tokenizer, load_model, max_positions, pick_device, save_model
from leakk.core.progress import tqdm
from leakk.models.prompting import answer_nll, encode_example
from leakk.models.training import Term, Trainer, TrainingSpec, cosine_with_warmup, resolve


def training_pairs(data: pl.DataFrame, *extra: str) -> list[tuple]:
    """(question, answer, *``extra`` columns) to train on: every training phrasing of each QA,
    in row order.

    Uses ``train_questions`` where the benchmark has it (the synthetic one), else
    ``question`` (TOFU-style data: the paraphrase is held out for evaluation); see
    :func:`leakk.data.training_column`.
    """
    pairs = []
    for qs, answer, *rest in data.select(training_column(data), "answer", *extra).iter_rows():
        for q in qs if isinstance(qs, list) else [qs]:
            pairs.append((q, answer, *rest))
    return pairs


def corpus_texts(data: pl.DataFrame, template: str) -> list[str]:
    """Every text a tokenizer for this benchmark must cover (both splits, all phrasings)."""
    texts = []
    for row in data.iter_rows(named=True):
        qs = [*(row.get("train_questions") or []), row["question"], row.get("paraphrased_question"),
              row.get("validation_question")]
        texts += [template.format(question=q) for q in qs if q] + [row["answer"]]
    return texts


def train_loop(
    model, tokenizer, pairs: list[tuple[str, str]], *, template: str, epochs: float | None, lr: float,
    batch_size: int, warmup_ratio: float, weight_decay: float, seed: int, device, desc: str,
    training: TrainingSpec | dict[str, Any] | None = None, steps: int | None = None,
) -> list[dict[str, Any]]:
    """Plain SFT on answer tokens; returns a per-step log. It runs ``steps`` optimiser steps
    when given, else ``epochs`` passes; ``batch_size`` is the effective batch; ``training``
    (default: the active ``training:`` section) sets precision, accumulation, checkpointing
    and LoRA (:mod:`leakk.models.training`)."""
    examples = [encode_example(q, a, tokenizer, template) for q, a in pairs]
    limit = max_positions(model)
    longest = max((len(ids) for ids, _ in examples), default=0)
    if limit and longest > limit:
        raise ParamsError(f"model: the longest training example has {longest} tokens, more than the model's "
                          f"{limit} positions (raise model.arch.n_positions, or use a shorter prompt_template)")
    if not examples:
        raise ParamsError(f"{desc}: no training examples")
    total = steps if steps is not None else max(1, round(epochs * math.ceil(len(examples) / batch_size)))
    rng = random.Random(seed)
    torch.manual_seed(seed)
    trainer = Trainer(model, resolve(training), device, lr=lr, weight_decay=weight_decay,
                      schedule=lambda opt: cosine_with_warmup(opt, int(warmup_ratio * total), total),
                      pad_id=tokenizer.pad_token_id)
    log, order, step = [], [], 0
    bar = tqdm(total=total, desc=desc, unit="step")
    while step < total:
        if not order:
            order = list(range(len(examples)))
            rng.shuffle(order)
        idx, order = order[:batch_size], order[batch_size:]
        loss, _ = trainer.step([Term([examples[i] for i in idx], lambda b, _: answer_nll(trainer.model, b))])
        step += 1
        log.append({"step": step, "loss": loss, "lr": trainer.lr_now()})
        bar.update()
        bar.set_postfix(loss=f"{loss:.3f}")
    bar.close()
    trainer.finish()
    return log


def finetune(
    data: pl.DataFrame, out: str | Path, *, splits: list[str], model_params: dict[str, Any],
    train_params: dict[str, Any], template: str, seed: int, device: str = "auto", name: str = "model",
    training: dict[str, Any] | None = None,
) -> None:
    """Train on the QA pairs of ``splits`` and save an HF folder with ``train_log.parquet``
    (``training``: the params' ``training:`` section; a LoRA adapter is merged before saving)."""
    subset = data.filter(pl.col("split").is_in(splits))
    if subset.height == 0:
        raise ParamsError(f"finetune: no rows in splits {splits}")
    dev = pick_device(device)
    if model_params.get("base"):
        model, tokenizer = load_model(model_params["base"], dev,
                                      trust_remote_code=model_params.get("trust_remote_code", False))
    else:
        # The tokenizer sees both splits' text so full and retrain share one vocabulary.
        tokenizer = build_tokenizer(corpus_texts(data, template), model_params["vocab_size"])
        model = build_gpt2(tokenizer, model_params["arch"], seed).to(dev)
    log = train_loop(model, tokenizer, training_pairs(subset), template=template, seed=seed,
                     device=dev, desc=f"finetune {name}", training=training, **train_params)
    save_model(model, tokenizer, out,
               extra={"train_log.parquet": lambda p: write_frame(pl.DataFrame(log), p)})

