"""Sampling: backends behind a registry (``hf``, ``vllm``); the stage lives in :mod:`.stage`.

A backend is a :class:`~leakk.sampling.backend.Backend` class: loaded from a model folder, it
samples prompt token ids for one :class:`~leakk.sampling.backend.SamplingRequest`.
Kept import-light (no torch, no polars) so the GPU benchmark and params validation load fast.
"""

from __future__ import annotations

from typing import Any

from leakk.core.registry import Registry
from leakk.sampling.backend import Backend, SamplingRequest
from leakk.sampling.decoding import GREEDY, Decoding

#: backend name → Backend class. Each backend module registers its class when imported; the
#: registry imports it on first use (vLLM only where asked for).
BACKENDS: Registry[type[Backend]] = Registry(
    "backend", "sample.backend",
    lazy={"hf": "leakk.sampling.hf_backend", "vllm": "leakk.sampling.vllm_backend"})


def register_backend(name: str):
    """Class decorator: register a :class:`Backend` subclass under ``name``."""
    return BACKENDS.register(name)


def load_backend(name: str) -> type[Backend]:
    """The backend class registered as ``name`` (importing its module on first use)."""
    return BACKENDS.get(name)


def open_backend(sample: dict[str, Any], model_dir: str, device: str = "auto") -> Backend:
    """The ``sample.backend`` of a ``sample:`` params section, loaded from ``model_dir`` with the
    section's ``batch_rows`` and ``options``; use it as a context manager."""
    cls = load_backend(sample.get("backend", "hf"))
    return cls.load(str(model_dir), device=device, batch_rows=sample.get("batch_rows", "auto"),
                    options=sample.get("options") or {})


__all__ = ["BACKENDS", "GREEDY", "Backend", "Decoding", "SamplingRequest", "load_backend", "open_backend",
           "register_backend"]
