"""Sampling: backends behind a registry (``hf``, ``vllm``); the stage lives in :mod:`.stage`.

Kept import-light (no torch, no polars) so the GPU benchmark and params validation load fast.
"""

from __future__ import annotations

from collections.abc import Callable

from leakk.errors import ParamsError
from leakk.sampling.decoding import GREEDY, Decoding

_MODULES = {"hf": "leakk.sampling.hf_backend", "vllm": "leakk.sampling.vllm_backend"}

#: backend name → function(model_dir, qids, questions, decoding, **params) → list of
#: (qid, sample_idx, text, n_tokens, finish_reason)
BACKENDS: dict[str, Callable[..., list[tuple[str, int, str, int, str]]]] = {}


def register_backend(name: str):
    def wrap(fn):
        BACKENDS[name] = fn
        return fn
    return wrap


def load_backend(name: str) -> Callable[..., list[tuple[str, int, str, int, str]]]:
    """The backend function registered as ``name`` (importing its module on first use)."""
    if name not in BACKENDS and name in _MODULES:
        import importlib

        importlib.import_module(_MODULES[name])
    if name not in BACKENDS:
        raise ParamsError(f"sample.backend={name!r}: unknown backend (known: {sorted(_MODULES)})")
    return BACKENDS[name]


__all__ = ["BACKENDS", "GREEDY", "Decoding", "load_backend", "register_backend"]
