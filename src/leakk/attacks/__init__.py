"""Attacks on an unlearned model: each maps a model folder to an attacked model folder, which
the pipeline then samples, judges and estimates like any other model (``<model>__<attack>``).

An attack is one module with one registered class that declares its own parameters
(``params_schema``), like methods and judges; ``attack.<name>: {type: <registered>, …}`` in
params.yaml configures one, and ``models`` (default: every model, retrain included as the
control that an attack must not invent knowledge) picks what it attacks.
"""

from __future__ import annotations

from typing import Any, ClassVar

from leakk.core.registry import Registry
from leakk.core.schema import filled

#: Registered attack classes by name (``attack.<name>.type``); imported on first use.
ATTACKS: Registry[type["Attack"]] = Registry("attack", "attack.<name>.type",
                                              lazy={"quantize": "leakk.attacks.quantize"})


def register_attack(name: str):
    """Class decorator: register an :class:`Attack` subclass under ``name``."""
    return ATTACKS.register(name)


class Attack:
    """Base: :meth:`apply` changes a loaded model in place."""

    #: JSON Schema of the attack's own keys in ``attack.<name>`` (with their defaults)
    params_schema: ClassVar[dict[str, Any]] = {"type": "object", "additionalProperties": False, "properties": {}}

    def apply(self, model) -> dict[str, Any]:
        """Attack ``model`` in place; return what was done (logged with the attacked folder)."""
        raise NotImplementedError


def attack_keys(spec: dict[str, Any]) -> dict[str, Any]:
    """An ``attack.<name>`` entry without the keys every attack has (``type``, ``models``)."""
    return {k: v for k, v in spec.items() if k not in ("type", "models")}


def make_attack(spec: dict[str, Any]) -> Attack:
    """The attack an ``attack.<name>`` entry configures, its own keys checked and filled."""
    cls = ATTACKS.get(spec["type"])
    return cls(**filled(attack_keys(spec), cls.params_schema, f"attack {spec['type']!r}"))


__all__ = ["ATTACKS", "Attack", "attack_keys", "make_attack", "register_attack"]
