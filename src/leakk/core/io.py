"""Atomic, contract-checked artifact I/O.

Every artifact is written to a temporary file in the destination folder and renamed into
place, so a stage killed midway never leaves a partial Parquet (or model folder) behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import polars as pl

from leakk.core.errors import ArtifactError
from leakk.core.layout import workflow_output

#: The one definition of each Parquet artifact's required columns (docs/design.md §4), with
#: the dtype each must have where the pipeline builds it (``None``: any dtype); extra
#: columns are allowed. Frames are built from these (:func:`contract_schema`) and checked
#: against them on every write and read (:func:`check_contract`).
CONTRACTS: dict[str, dict[str, Any] | tuple[str, ...]] = {
    # ``fact`` (the answer's key span) is optional: benchmarks that have one declare it
    # (``register_benchmark(..., columns=("fact", ...))``); judges that need it refuse without it
    "data": {"qid": None, "group": None, "question": pl.String, "answer": pl.String,
             "split": pl.String},
    "samples": {
        "qid": pl.String, "sample_idx": pl.Int64, "text": pl.String, "n_tokens": pl.Int64,
        "finish_reason": pl.String, "model": pl.String, "decoding": pl.String,
        "temperature": pl.Float64, "top_p": pl.Float64, "seed": pl.Int64,
    },
    "judgments": {"qid": None, "sample_idx": pl.Int64, "judge": pl.String, "score": pl.Float64,
                  "leaked": pl.Boolean},
    "leak_table": {
        "model": pl.String, "attack": pl.String, "decoding": pl.String, "judge": pl.String, "k": pl.Int64,
        "leak_at_k": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64, "n": pl.Int64,
        "questions": pl.Int64, "missing": pl.Int64, "excess_over_retrain": pl.Float64,
    },
    "utility": {"model": pl.String, "retain_accuracy": pl.Float64, "questions": pl.Int64,
                "missing": pl.Int64},
    # RULE: the (question, leaked completion) pairs a round adds to the forget set
    "rule_leaked": {"qid": pl.String, "question": pl.String, "completion": pl.String, "round": pl.Int64},
    # judge vs fact (ground truth) per (judge, model, decoding): leakk.stats.calibrate
    "calibration": {
        "judge": pl.String, "model": pl.String, "decoding": pl.String, "items": None, "tp": None,
        "fp": None, "fn": None, "tn": None, "precision": pl.Float64, "recall": pl.Float64, "f1": pl.Float64,
        "false_positive_rate": pl.Float64, "k": None, "leak_at_k": pl.Float64, "leak_at_k_fact": pl.Float64,
    },
    # exact probability that one completion begins with the answer (leakk.stats.bounds)
    "bounds": (
        "model", "decoding", "qid", "group", "answer_tokens", "log_p", "p", "fact_token_index",
        "fact_token_rank", "fact_token_prob",
    ),
    "bound_table": (
        "model", "decoding", "judge", "k", "bound", "questions", "leak_at_k", "ci_low", "ci_high",
        "upper_exact", "consistent",
    ),
}

#: The stage (``leakk`` subcommand / Snakemake rule) that writes each kind of artifact.
PRODUCERS: dict[str, str] = {
    "data": "data", "samples": "sample", "judgments": "judge", "leak_table": "estimate",
    "utility": "estimate", "rule_leaked": "rule_round", "calibration": "calibrate",
    "bounds": "bounds", "bound_table": "bounds_table",
}


def _spec(kind: str) -> dict[str, Any]:
    """``{column: dtype or None}`` of ``kind``; an entry may also be a plain tuple of column
    names (no dtypes checked)."""
    spec = CONTRACTS[kind]
    return dict(spec) if isinstance(spec, dict) else dict.fromkeys(spec)


def contract_schema(kind: str, columns: Iterable[str] | None = None) -> dict[str, Any]:
    """``{column: dtype}`` of the ``kind`` contract (only ``columns``, if given), for building
    empty or row-wise frames that are on contract by construction."""
    spec = _spec(kind)
    return {c: spec[c] for c in (columns if columns is not None else spec)}


def _rebuild_hint(kind: str | None, path: str | os.PathLike, stages: tuple[str, ...] = ()) -> str:
    """How to rebuild ``path``: a command that does (a bare re-run of `snakemake` would not,
    while everything downstream of the file is present)."""
    stages = stages or ((PRODUCERS[kind],) if kind in PRODUCERS else ())
    names = " or ".join(f"`{s}`" for s in stages)
    made = f"made by the {names} stage; " if stages else ""
    return (f"{made}rebuild it: `snakemake --cores all --force {shlex.quote(workflow_output(path))}` (a preset: add its --configfile; "
            "DVC: `dvc repro`)")


def one_line(exc: BaseException, limit: int = 160) -> str:
    """``Type: message`` of a library exception on one short line (for ArtifactError texts)."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[:limit] + "…"


def corrupt_folder(path: str | os.PathLike, exc: BaseException, stages: tuple[str, ...]) -> ArtifactError:
    """The error for a folder artifact (a model) that exists but cannot be loaded."""
    return ArtifactError(f"{path}: corrupt or incomplete folder ({one_line(exc)}); "
                         f"{_rebuild_hint(None, path, stages)}")


def require_columns(df: pl.DataFrame, columns: Iterable[str], what: str, hint: str = "") -> None:
    """The one column check: raise ArtifactError naming ``what`` and the missing columns."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ArtifactError(f"{what}: missing required columns {missing}" + (f"; {hint}" if hint else ""))


def check_contract(df: pl.DataFrame, kind: str, where: str | os.PathLike = "") -> None:
    """Raise ArtifactError naming the missing (or mistyped) columns if ``df`` breaks the
    ``kind`` contract."""
    spec = _spec(kind)
    require_columns(df, spec, f"{where or kind}: {kind}", _rebuild_hint(kind, where) if where else "")
    wrong = [f"{c} is {df.schema[c]}, not {dtype}" for c, dtype in spec.items()
             if dtype is not None and df.schema[c] != dtype and not _compatible(df.schema[c], dtype)]
    if wrong:
        raise ArtifactError(f"{where or kind}: {kind} columns of the wrong type ({'; '.join(wrong)})"
                            + (f"; {_rebuild_hint(kind, where)}" if where else ""))


def _compatible(actual: pl.DataType, wanted: Any) -> bool:
    """Same family (any integer for an integer, any float for a float, Null for anything):
    the contract is about meaning, not bit width."""
    if actual == pl.Null:
        return True
    for family in (lambda d: d.is_integer(), lambda d: d.is_float()):
        if family(actual) and family(wanted):
            return True
    return wanted == pl.String and actual in (pl.String, pl.Categorical, pl.Enum)


def _remove_stale_temps(path: Path) -> None:
    """Remove what a killed writer of ``path`` left (``.<name>.<8 random chars>.tmp``, as
    :func:`atomic_path` names it): a resumed stage then leaves its output folder exactly as
    an uninterrupted run does, so DVC's folder hashes match. One writer per target at a time
    (the workflow engines guarantee it), so no live temp file is touched."""
    import re

    stale = re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.tmp")
    for sibling in path.parent.iterdir():
        if stale.fullmatch(sibling.name):
            if sibling.is_dir() and not sibling.is_symlink():
                shutil.rmtree(sibling, ignore_errors=True)
            else:
                sibling.unlink(missing_ok=True)


#: this process's execution settings (device, threads, batch sizes): they change where and how
#: fast a stage runs, not its result, so they are no cache key; every Parquet artifact records
#: them in its metadata under :data:`EXECUTION_KEY` instead
_EXECUTION: dict[str, Any] = {}
EXECUTION_KEY = "leakk.execution"


def record_execution(**settings: Any) -> None:
    """Note execution settings (None: not set) for the artifacts this process writes next."""
    _EXECUTION.update({k: v for k, v in settings.items() if v is not None})


def reset_execution() -> None:
    """Forget the noted settings: each command starts its own record (the CLI's ``main`` may run
    several commands in one process, and one command's device must not reach the next one's files)."""
    _EXECUTION.clear()


def execution_metadata() -> dict[str, str] | None:
    """The Parquet key-value metadata recording the execution settings (None: none noted)."""
    return {EXECUTION_KEY: json.dumps(_EXECUTION, sort_keys=True)} if _EXECUTION else None


def read_execution(path: str | os.PathLike) -> dict[str, Any]:
    """The execution settings a Parquet artifact was written with ({} if it records none)."""
    meta = pl.read_parquet_metadata(path)
    return json.loads(meta[EXECUTION_KEY]) if EXECUTION_KEY in meta else {}


def write_frame(df: pl.DataFrame, path: str | os.PathLike) -> None:
    """Write ``df`` to ``path`` (inside an atomic folder being built) with the execution metadata."""
    df.write_parquet(path, metadata=execution_metadata())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling path; on success rename it onto ``path``, else remove it
    (a SIGKILL leaves it: the next write of ``path`` removes it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path)
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
        # mkstemp/mkdtemp (and safetensors' writer) create owner-only paths; give the
        # artifact, and everything in a folder artifact, the usual permissions
        os.chmod(tmp, (0o777 if is_dir else 0o666) & ~_umask)
        if is_dir:
            for sub in tmp.rglob("*"):
                if not sub.is_symlink():
                    os.chmod(sub, (0o777 if sub.is_dir() else 0o666) & ~_umask)
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
        write_frame(df, tmp)


def read_parquet(path: str | os.PathLike, kind: str | None = None) -> pl.DataFrame:
    """Read a Parquet artifact, failing with one line if it is absent, unreadable (empty,
    truncated, not Parquet) or off the ``kind`` contract: the file, the stage that makes it
    and how to rebuild it."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such artifact (did the upstream stage run?)")
    try:
        df = pl.read_parquet(path)
    except Exception as exc:  # polars / pyarrow / OS errors: name the file, not the library
        what = "empty file" if path.stat().st_size == 0 else "corrupt or truncated Parquet"
        raise ArtifactError(f"{path}: {what} ({one_line(exc)}); {_rebuild_hint(kind, path)}") from None
    if kind is not None:
        check_contract(df, kind, path)
    return df


def write_text(text: str, path: str | os.PathLike) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def check_model_dir(path: str | os.PathLike, key: str = "model") -> Path:
    """Fail clearly if ``path`` is not an HF model folder with safetensors weights (the models
    contract: pickled weights are refused)."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise ArtifactError(f"{key}: {path} is not a model folder (no config.json)")
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.safetensors.index.json")):
        raise ArtifactError(f"{key}: {path} has no safetensors weights (pickled weights are refused)")
    return path
