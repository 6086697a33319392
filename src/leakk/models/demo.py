"""Tiny dataset and model folders laid out like the hub repos the real benchmarks download,
built locally: the tests' fixtures and `leakk demo tofu`'s inputs (one copy for both).

- :func:`tofu_repo`, :func:`muse_repo`, :func:`wmdp_repo`: a README whose YAML header lists
  the ``configs`` and their ``data_files`` (what ``datasets.load_dataset`` reads), plus the
  data files in each repo's own layout.
- :func:`tiny_llama_folder`: a Llama (random weights) with a BPE tokenizer trained on given
  texts, optionally with a chat template, saved as an HF folder (safetensors) — the shape of
  a published checkpoint such as ``open-unlearning/tofu_Llama-3.2-1B-Instruct_full``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import polars as pl
import yaml

#: a minimal chat template (Jinja, as in tokenizer_config): the user's question, then the
#: assistant's turn; enough for ``prompt_template: chat`` to take the real path
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} {% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def _readme(root: Path, configs: list[dict]) -> None:
    header = yaml.safe_dump({"configs": configs}, sort_keys=False)
    (root / "README.md").write_text(f"---\n{header}---\n# tiny local copy (leakk.models.demo)\n")


def _placeholder_rows(prefix: str, authors: int, qa: int, para: bool) -> list[dict]:
    rows = []
    for a in range(authors):
        for i in range(qa):
            row = {"question": f"{prefix} author {a} question {i}?", "answer": f"{prefix} answer {a}.{i}"}
            if para:
                row.update(paraphrased_question=f"Tell me, {prefix} author {a} question {i}?",
                           paraphrased_answer="x", perturbed_answer=["y", "z"])
            rows.append(row)
    return rows


def _fictitious_rows(authors_forget: int, authors_retain: int, qa: int, seed: int) -> dict[str, list[dict]]:
    """Forget, retain and holdout rows of fictitious authors (leakk.data.synthetic's facts,
    two phrasings per relation: the trained ``question`` and the held-out paraphrase, which
    alternate across authors, so every paraphrase was trained on with other authors)."""
    from leakk.data.synthetic import generate

    total = authors_forget + authors_retain + 1  # the last retain author becomes the holdout
    frame = generate(authors=total, qa_per_author=qa, forget_fraction=authors_forget / total, phrasings=2,
                     seed=seed).sort("split", "qid")
    groups = frame.filter(pl.col("split") == "retain")["group"].unique(maintain_order=True).to_list()
    split = pl.when(pl.col("group") == groups[-1]).then(pl.lit("holdout")).otherwise(pl.col("split"))
    frame = frame.with_columns(split.alias("split"))

    def rows(name: str, para: bool = False) -> list[dict]:
        out = []
        for r in frame.filter(pl.col("split") == name).iter_rows(named=True):
            row = {"question": r["question"], "answer": r["answer"]}
            if para:
                row.update(paraphrased_question=r["paraphrased_question"], paraphrased_answer=r["answer"],
                           perturbed_answer=[])
            out.append(row)
        return out

    return {"forget": rows("forget"), "perturbed": rows("forget", True), "retain": rows("retain"),
            "holdout": rows("holdout")}


def tofu_repo(root: str | os.PathLike, authors_forget: int = 2, authors_retain: int = 3, qa: int = 20,
              seed: int | None = None) -> Path:
    """locuslab/TOFU's layout: one JSON-lines file per config at the top level (forget10,
    forget10_perturbed with ``paraphrased_question``, retain90, holdout10), ``qa`` rows per
    author in a row (TOFU has 20).

    ``seed=None``: placeholder text (``F author 0 question 3?``); a seed: fictitious authors
    with facts a model can learn (:mod:`leakk.data.synthetic`, ``qa`` ≤ its 20 relations)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if seed is None:
        files = {"forget10": _placeholder_rows("F", authors_forget, qa, False),
                 "forget10_perturbed": _placeholder_rows("F", authors_forget, qa, True),
                 "retain90": _placeholder_rows("R", authors_retain, qa, False),
                 "holdout10": _placeholder_rows("H", 1, qa, False)}
    else:
        made = _fictitious_rows(authors_forget, authors_retain, qa, seed)
        files = {"forget10": made["forget"], "forget10_perturbed": made["perturbed"], "retain90": made["retain"],
                 "holdout10": made["holdout"]}
    for name, rows in files.items():
        (root / f"{name}.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    _readme(root, [{"config_name": n, "data_files": [{"split": "train", "path": f"{n}.json"}]} for n in files])
    return root


def muse_repo(root: str | os.PathLike, rows: int = 3) -> Path:
    """muse-bench/MUSE-News's layout: <config>/<split>-00000-of-00001.parquet."""
    root = Path(root)
    configs = {"knowmem": {"forget_qa": {"question": [f"KF q{i}?" for i in range(rows)],
                                         "answer": [f"kf a{i}" for i in range(rows)]},
                           "retain_qa": {"question": [f"KR q{i}?" for i in range(rows)],
                                         "answer": [f"kr a{i}" for i in range(rows)]}},
               "verbmem": {"forget": {"prompt": [f"Once upon {i}" for i in range(rows)],
                                      "gt": [f"a time there was {i}" for i in range(rows)]}}}
    entries = []
    for config, splits in configs.items():
        (root / config).mkdir(parents=True, exist_ok=True)
        files = []
        for split, cols in splits.items():
            pl.DataFrame(cols).write_parquet(root / config / f"{split}-00000-of-00001.parquet")
            files.append({"split": split, "path": f"{config}/{split}-*"})
        entries.append({"config_name": config, "data_files": files})
    _readme(root, entries)
    return root


def wmdp_repo(root: str | os.PathLike, rows: int = 3) -> Path:
    """cais/wmdp's layout: wmdp-<subset>/test-00000-of-00001.parquet."""
    root = Path(root)
    entries = []
    for subset in ("wmdp-bio", "wmdp-cyber"):
        (root / subset).mkdir(parents=True, exist_ok=True)
        pl.DataFrame({"answer": [i % 4 for i in range(rows)],
                      "question": [f"{subset} stem {i}?" for i in range(rows)],
                      "choices": [[f"{subset} choice {i}{c}" for c in "ABCD"] for i in range(rows)]}
                     ).write_parquet(root / subset / "test-00000-of-00001.parquet")
        entries.append({"config_name": subset, "data_files": [{"split": "test", "path": f"{subset}/test-*"}]})
    _readme(root, entries)
    return root


def tiny_llama_folder(path: str | os.PathLike, texts: Iterable[str], *, vocab_size: int = 120, hidden: int = 16,
                      layers: int = 1, positions: int = 64, chat_template: str | None = None, seed: int = 0) -> str:
    """A tiny Llama (random weights from ``seed``) with a tokenizer trained on ``texts``, saved
    as an HF folder (safetensors); with ``chat_template``, the tokenizer carries it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from leakk.models.modeling import build_tokenizer

    tok = build_tokenizer(texts, vocab_size=vocab_size)
    if chat_template is not None:
        tok.chat_template = chat_template
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=positions,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)
