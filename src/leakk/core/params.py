"""Dotted params keys (``sample.n``, ``unlearn.{name}``): what a stage reads, and its hash.

A stage declares the keys it reads; :func:`select` picks their values out of the
defaults-filled params (placeholders such as ``{name}`` filled from the job), and
:func:`fingerprint` hashes them. The Snakemake rules, dvc.yaml and RULE's resume check all use
this one selection, so they cannot disagree about what a stage depends on.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any


def get(params: Mapping[str, Any], key: str) -> Any:
    """The value at dotted ``key`` (None where a part is absent)."""
    node: Any = params
    for part in key.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def has(params: Mapping[str, Any], key: str) -> bool:
    """Whether dotted ``key`` is written in ``params``."""
    node: Any = params
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def fill(key: str, names: Mapping[str, object]) -> str:
    """``key`` with each ``{placeholder}`` replaced by its value in ``names``."""
    for placeholder, value in names.items():
        key = key.replace("{" + placeholder + "}", str(value))
    return key


def select(params: Mapping[str, Any], keys: Iterable[str], names: Mapping[str, object],
           ignores: Iterable[str] = ()) -> dict[str, Any]:
    """``{key: value}`` of ``keys`` (placeholders filled), leaving out the sub-keys in ``ignores``."""
    ignored = {fill(k, names) for k in ignores}
    out = {}
    for key in keys:
        key = fill(key, names)
        value = get(params, key)
        if isinstance(value, Mapping) and ignored:
            value = {k: v for k, v in value.items() if f"{key}.{k}" not in ignored}
        out[key] = value
    return out


def fingerprint(values: Mapping[str, Any]) -> str:
    """16 hex digits of the sha256 of ``values`` (key order does not matter)."""
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]
