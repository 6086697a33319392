"""Atomic, contract-checked artifact I/O.

Every artifact is written to a temporary file in the destination folder and renamed into
place, so a stage killed midway never leaves a partial Parquet (or model folder) behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from leakk.errors import ArtifactError

#: Required columns of each Parquet artifact (DESIGN.md §3); extra columns are allowed.
CONTRACTS: dict[str, tuple[str, ...]] = {
    "data": ("qid", "group", "question", "answer", "fact", "split"),
    "samples": (
        "qid", "sample_idx", "text", "n_tokens", "finish_reason", "model", "decoding",
        "temperature", "top_p", "seed",
    ),
    "judgments": ("qid", "sample_idx", "judge", "score", "leaked"),
    "leak_table": (
        "model", "decoding", "judge", "k", "leak_at_k", "ci_low", "ci_high", "n",
        "questions", "missing", "excess_over_retrain",
    ),
    # exact probability that one completion begins with the answer (leakk.bounds)
    "bounds": (
        "model", "decoding", "qid", "group", "answer_tokens", "log_p", "p", "fact_token_index",
        "fact_token_rank", "fact_token_prob",
    ),
    "bound_table": (
        "model", "decoding", "judge", "k", "bound", "questions", "leak_at_k", "ci_low", "ci_high",
        "upper_exact", "consistent",
    ),
}


def check_contract(df: pl.DataFrame, kind: str, where: str | os.PathLike = "") -> None:
    """Raise ArtifactError naming the missing columns if ``df`` breaks the ``kind`` contract."""
    missing = [c for c in CONTRACTS[kind] if c not in df.columns]
    if missing:
        raise ArtifactError(f"{where or kind}: missing required {kind} columns {missing}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling path; on success rename it onto ``path``, else remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        _umask = os.umask(0)
        os.umask(_umask)
        # mkstemp/mkdtemp create owner-only paths; give the artifact the usual permissions
        os.chmod(tmp, (0o777 if is_dir else 0o666) & ~_umask)
        if is_dir:
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp, path)
        else:
            os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def write_parquet(df: pl.DataFrame, path: str | os.PathLike, kind: str | None = None) -> None:
    """Write ``df`` atomically, after checking it against the ``kind`` contract if given."""
    if kind is not None:
        check_contract(df, kind, path)
    with atomic_path(path) as tmp:
        df.write_parquet(tmp)


def read_parquet(path: str | os.PathLike, kind: str | None = None) -> pl.DataFrame:
    """Read a Parquet artifact, failing with a clear message if it is absent or off-contract."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such artifact (did the upstream stage run?)")
    df = pl.read_parquet(path)
    if kind is not None:
        check_contract(df, kind, path)
    return df


def write_text(text: str, path: str | os.PathLike) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
