"""Benchmarks: a registry from ``data.benchmark`` to a function producing the data frame.

Each benchmark is one module whose builder is decorated with :func:`register_benchmark`,
declaring the columns its frame has, so params that name a column (``question_column``)
are checked before any data exists, and the JSON Schema of its ``data.<benchmark>`` section
(names, defaults, ranges; the only place its defaults are written) with a check of the rules a
schema cannot state. Params validation applies both once, at load; builders take the values as
they are. Real benchmarks (TOFU, MUSE, WMDP) register here as
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
from leakk.core.schema import filled

#: the keys of a hub benchmark's section that say where its data is (``leakk download`` reads them)
HUB_KEYS = ("repo", "revision")
#: JSON Schema properties of those keys, in every hub benchmark's schema
HUB_SOURCE: dict[str, Any] = {
    "repo": {"type": "string", "minLength": 1, "description": "a hub id (org/name) or a local folder laid out like the hub repo"},
    "revision": {"type": ["string", "null"], "pattern": "^[A-Za-z0-9._/-]+$",
                 "description": "the hub revision to fetch: a commit hash (pin it), tag or branch; required for a hub "
                                "id (null or absent for a local folder)"},
}


def hub_schema(**properties: Any) -> dict[str, Any]:
    """The schema of a hub benchmark's section: where its data is, plus ``properties``."""
    return {"type": "object", "additionalProperties": False, "required": ["repo"],
            "properties": {**HUB_SOURCE, **properties}}

#: Registered benchmark builders by name; each has a ``columns`` attribute.
BENCHMARKS: Registry[Callable[..., pl.DataFrame]] = Registry("benchmark", "data.benchmark")


def _no_rules(params: dict[str, Any], where: str) -> None:
    """A benchmark whose schema says everything."""


def register_benchmark(name: str, *, columns: Iterable[str], schema: dict[str, Any],
                       check: Callable[[dict[str, Any], str], None] = _no_rules,
                       optional_columns: dict[str, str] | None = None):
    """Function decorator: register a benchmark builder ``fn(**params, seed) → frame`` under
    ``name``; ``columns`` are the columns every frame it builds has (the data contract's
    required columns are added), ``schema`` the JSON Schema of its params section and
    ``check(params, where)`` its rules beyond the schema (raising ``ParamsError``).
    ``optional_columns`` maps a column among ``columns`` to the boolean param that fills it
    (null otherwise): params may name it only where that param is on."""

    def deco(fn):
        fn.columns = tuple(dict.fromkeys([*CONTRACTS["data"], *columns]))
        fn.optional_columns = dict(optional_columns or {})
        fn.params_schema, fn.check_params = schema, check
        return BENCHMARKS.register(name)(fn)

    return deco


def filled_columns(name: str, params: dict[str, Any] | None) -> tuple[str, ...]:
    """The columns benchmark ``name`` fills under its (checked) ``params``: its declared
    columns less the optional ones whose param is off."""
    fn = BENCHMARKS.get(name)
    return tuple(c for c in fn.columns if c not in fn.optional_columns or (params or {}).get(fn.optional_columns[c]))


def benchmark_params(name: str, params: dict[str, Any] | None, source: str, located: bool = True) -> dict[str, Any]:
    """``data.<name>`` checked against benchmark ``name``'s schema and rules, defaults filled
    (``located=False``: the data's folder is given apart, so ``repo`` may be absent)."""
    fn = BENCHMARKS.get(name)
    schema = fn.params_schema if located else {
        **fn.params_schema, "required": [k for k in fn.params_schema.get("required", ()) if k not in HUB_KEYS]}
    out = filled(params, schema, source, ("data", name))
    fn.check_params(out, f"{source}: data.{name}")
    return out


def training_column(data: pl.DataFrame) -> str:
    """The column of the phrasings models are trained on: ``train_questions`` (a list per QA,
    the synthetic benchmark) where the data has it, else ``question`` (TOFU-style data, whose
    ``paraphrased_question`` is held out for evaluation)."""
    return "train_questions" if "train_questions" in data.columns else "question"


def build_benchmark(name: str, params: dict[str, Any], seed: int, source: str | None = None) -> pl.DataFrame:
    """Build benchmark ``name`` from its params section (the hub keys ``repo``/``revision`` left
    to the download stage); a hub benchmark reads the dataset folder ``source`` (what ``leakk
    download`` fetched, or a local folder). ``params`` may leave keys to the schema's defaults."""
    fn = BENCHMARKS.get(name)
    params = {k: v for k, v in benchmark_params(name, params, "data", located=False).items() if k not in HUB_KEYS}
    frame = fn(**params, seed=seed, **({"source": str(source)} if source is not None else {}))
    missing = [c for c in fn.columns if c not in frame.columns]
    if missing:  # a programming error in the benchmark module, caught before it is written
        raise ArtifactError(f"benchmark {name!r}: built frame lacks its declared columns {missing}")
    return frame


from leakk.data import synthetic as _synthetic  # noqa: E402,F401  (registers "synthetic")
from leakk.data import tofu as _tofu  # noqa: E402,F401  (registers "tofu")
from leakk.data import muse as _muse  # noqa: E402,F401  (registers "muse")
from leakk.data import wmdp as _wmdp  # noqa: E402,F401  (registers "wmdp")

__all__ = ["BENCHMARKS", "benchmark_params", "build_benchmark", "hub_schema", "register_benchmark", "training_column"]
