"""Benchmarks: a registry from ``data.benchmark`` to a function producing the data frame.

Each benchmark is one module whose builder is decorated with :func:`register_benchmark`,
declaring the columns its frame has, so params that name a column (``question_column``)
are checked before any data exists. Real benchmarks (TOFU, MUSE, WMDP) register here as
one module each, imported below; they read ``datasets`` folders
(:mod:`leakk.data.hubdata`) that the ``download`` stage fills.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import polars as pl

from leakk.core.errors import ArtifactError
from leakk.core.io import CONTRACTS
from leakk.core.registry import Registry

#: Registered benchmark builders by name; each has a ``columns`` attribute.
BENCHMARKS: Registry[Callable[..., pl.DataFrame]] = Registry("benchmark", "data.benchmark")


def register_benchmark(name: str, *, columns: Iterable[str]):
    """Function decorator: register a benchmark builder ``fn(**params, seed) → frame`` under
    ``name``; ``columns`` are the columns every frame it builds has (the data contract's
    required columns are added)."""

    def deco(fn):
        fn.columns = tuple(dict.fromkeys([*CONTRACTS["data"], *columns]))
        return BENCHMARKS.register(name)(fn)

    return deco


def benchmark_columns(name: str) -> tuple[str, ...]:
    """The columns benchmark ``name`` produces (``ParamsError`` if unknown)."""
    return BENCHMARKS.get(name).columns


def training_column(data: pl.DataFrame) -> str:
    """The column of the phrasings models are trained on: ``train_questions`` (a list per QA,
    the synthetic benchmark) where the data has it, else ``question`` (TOFU-style data, whose
    ``paraphrased_question`` is held out for evaluation)."""
    return "train_questions" if "train_questions" in data.columns else "question"


def build_benchmark(name: str, params: dict[str, Any], seed: int, source: str | None = None) -> pl.DataFrame:
    """Build benchmark ``name`` from its params section; a hub benchmark reads the dataset
    folder ``source`` (what ``leakk download`` fetched, or a local folder)."""
    fn = BENCHMARKS.get(name)
    frame = fn(**params, seed=seed, **({"source": str(source)} if source is not None else {}))
    missing = [c for c in fn.columns if c not in frame.columns]
    if missing:  # a programming error in the benchmark module, caught before it is written
        raise ArtifactError(f"benchmark {name!r}: built frame lacks its declared columns {missing}")
    return frame


from leakk.data import synthetic as _synthetic  # noqa: E402,F401  (registers "synthetic")
from leakk.data import tofu as _tofu  # noqa: E402,F401  (registers "tofu")
from leakk.data import muse as _muse  # noqa: E402,F401  (registers "muse")
from leakk.data import wmdp as _wmdp  # noqa: E402,F401  (registers "wmdp")

__all__ = ["BENCHMARKS", "benchmark_columns", "build_benchmark", "register_benchmark", "training_column"]
