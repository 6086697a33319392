"""Tiny dataset folders laid out like the hub repos (README.md ``configs`` + data files), and a
tiny model folder: what `leakk download` fetches, built here without any network."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import yaml


def _readme(root: Path, configs: list[dict]) -> None:
    header = yaml.safe_dump({"configs": configs}, sort_keys=False)
    (root / "README.md").write_text(f"---\n{header}---\n# tiny test copy\n")


def tofu_repo(root: Path, authors_forget: int = 2, authors_retain: int = 3, qa: int = 20) -> Path:
    """locuslab/TOFU's layout: one JSON-lines file per config at the top level."""
    root.mkdir(parents=True, exist_ok=True)

    def qa_rows(prefix: str, authors: int, para: bool = False) -> list[dict]:
        rows = []
        for a in range(authors):
            for i in range(qa):
                row = {"question": f"{prefix} author {a} question {i}?", "answer": f"{prefix} answer {a}.{i}"}
                if para:
                    row.update(paraphrased_question=f"Tell me, {prefix} author {a} question {i}?",
                               paraphrased_answer="x", perturbed_answer=["y", "z"])
                rows.append(row)
        return rows

    files = {"forget10": qa_rows("F", authors_forget), "forget10_perturbed": qa_rows("F", authors_forget, True),
             "retain90": qa_rows("R", authors_retain), "holdout10": qa_rows("H", 1)}
    for name, rows in files.items():
        (root / f"{name}.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    _readme(root, [{"config_name": n, "data_files": [{"split": "train", "path": f"{n}.json"}]} for n in files])
    return root


def muse_repo(root: Path, rows: int = 3) -> Path:
    """muse-bench/MUSE-News's layout: <config>/<split>-00000-of-00001.parquet."""
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


def wmdp_repo(root: Path, rows: int = 3) -> Path:
    """cais/wmdp's layout: wmdp-<subset>/test-00000-of-00001.parquet."""
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
