"""Sampling: backends behind a registry (``hf``, ``vllm``); the stage lives in :mod:`.stage`.

Kept import-light (no torch, no polars) so the GPU benchmark and params validation load fast.
"""

from __future__ import annotations

from collections.abc import Callable

from leakk.registry import Registry
from leakk.sampling.decoding import GREEDY, Decoding

#: backend name → function(model_dir, qids, questions, decoding, **params) → list of
#: (qid, sample_idx, text, n_tokens, finish_reason). Each backend module registers itself
#: when imported; the registry imports it on first use (vLLM only where asked for).
BACKENDS: Registry[Callable[..., list[tuple[str, int, str, int, str]]]] = Registry(
    "backend", "sample.backend",
    lazy={"hf": "leakk.sampling.hf_backend", "vllm": "leakk.sampling.vllm_backend"})


#: backend name → (the module it needs beyond leakk's own dependencies, how to install it);
#: validation refuses a backend whose module is missing before any job runs
BACKEND_REQUIRES: dict[str, tuple[str, str]] = {"vllm": ("vllm", "pip install 'leakk[gpu]'")}


def register_backend(name: str):
    """Function decorator: register a sampling backend under ``name``."""
    return BACKENDS.register(name)


def load_backend(name: str) -> Callable[..., list[tuple[str, int, str, int, str]]]:
    """The backend function registered as ``name`` (importing its module on first use)."""
    return BACKENDS.get(name)


__all__ = ["BACKENDS", "BACKEND_REQUIRES", "GREEDY", "Decoding", "load_backend", "register_backend"]
