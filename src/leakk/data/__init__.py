"""Benchmarks: a registry from ``data.benchmark`` to a function producing the data frame.

Real benchmarks (TOFU, MUSE, WMDP) register here as one module each.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import polars as pl

from leakk.data import synthetic
from leakk.errors import ParamsError

BENCHMARKS: dict[str, Callable[..., pl.DataFrame]] = {
    "synthetic": synthetic.generate,
}


def build_benchmark(name: str, params: dict[str, Any], seed: int) -> pl.DataFrame:
    """Build benchmark ``name`` from its params section."""
    if name not in BENCHMARKS:
        raise ParamsError(f"data.benchmark={name!r}: unknown benchmark (known: {sorted(BENCHMARKS)})")
    return BENCHMARKS[name](**params, seed=seed)
