"""Attacks on an unlearned model: each maps a model folder to an attacked model folder, which
the pipeline then samples, judges and estimates like any other model (``<model>__<attack>``).
An attack changes the weights (``quantize``, ``relearn``) or the prompts (``prompt``: its
:meth:`Attack.template` is the prompt template the attacked model is sampled and bounded with).

An attack that trains on some forget questions (``relearn``) holds them out of its own
evaluation (:meth:`Attack.evaluated`): the sample and bounds stages of an attacked model read
only :func:`evaluation_inputs`, so a relearned model is never scored on what it was taught. The
same hook may rewrite the evaluation column (``prompt`` with ``style: paraphrase`` turns it into
a set of phrasings, over which the sampler spreads each question's n completions).

An attack is one module with one registered class that declares its own parameters
(``params_schema``), like methods and judges; ``attack.<name>: {type: <registered>, …}`` in
params.yaml configures one, and ``models`` (default: every model, retrain included as the
control that an attack must not invent knowledge) picks what it attacks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from leakk.core.layout import attacked_models
from leakk.core.registry import Registry
from leakk.core.schema import filled

#: Registered attack classes by name (``attack.<name>.type``); imported on first use.
ATTACKS: Registry[type["Attack"]] = Registry("attack", "attack.<name>.type",
                                              lazy={"quantize": "leakk.attacks.quantize",
                                                    "relearn": "leakk.attacks.relearn",
                                                    "prompt": "leakk.attacks.prompt"})


def register_attack(name: str):
    """Class decorator: register an :class:`Attack` subclass under ``name``."""
    return ATTACKS.register(name)


@dataclass(frozen=True)
class Target:
    """What an attack may use besides the model's weights: its tokenizer, the benchmark (a
    polars frame), the params' prompt template and ``training:`` section, and the device."""

    tokenizer: Any
    data: Any
    template: str
    training: dict[str, Any] | None = None
    device: Any = "cpu"


class Attack:
    """Base: :meth:`apply` changes a loaded model in place; :meth:`evaluated` says which
    benchmark rows the attacked model is evaluated on (all of them unless it trained on some)."""

    #: JSON Schema of the attack's own keys in ``attack.<name>`` (with their defaults)
    params_schema: ClassVar[dict[str, Any]] = {"type": "object", "additionalProperties": False, "properties": {}}

    def apply(self, model, target: Target) -> dict[str, Any]:
        """Attack ``model`` in place; return what was done (logged with the attacked folder)."""
        raise NotImplementedError

    def evaluated(self, data, question_column: str):
        """The rows of benchmark ``data`` the attacked model is sampled and scored on, asked in
        ``question_column`` (``sample.question_column``; a list there is a set of phrasings)."""
        return data

    def template(self, template: str, data) -> str:
        """The prompt template the attacked model is sampled with (the params' own, unless the
        attack is on the prompt)."""
        return template

    @classmethod
    def refuse(cls, params: dict[str, Any], own: dict[str, Any]) -> str | None:
        """Why the attack with its own keys ``own`` (schema defaults filled) cannot run with
        ``params`` (checked when params load), or None."""
        return None


def attack_keys(spec: dict[str, Any]) -> dict[str, Any]:
    """An ``attack.<name>`` entry without the keys every attack has (``type``, ``models``)."""
    return {k: v for k, v in spec.items() if k not in ("type", "models")}


def make_attack(spec: dict[str, Any]) -> Attack:
    """The attack an ``attack.<name>`` entry configures, its own keys checked and filled."""
    cls = ATTACKS.get(spec["type"])
    return cls(**filled(attack_keys(spec), cls.params_schema, f"attack {spec['type']!r}"))


def evaluation_inputs(params: dict[str, Any], model: str, data) -> tuple[Any, str]:
    """What model ``model`` is sampled and bounded on: the benchmark rows (its attack's
    :meth:`Attack.evaluated` rows for an attacked ``<model>__<attack>``, every row for a clean
    model) and the prompt template (its attack's :meth:`Attack.template`, else ``prompt_template``)."""
    attacked = attacked_models(params).get(model)
    if attacked is None:
        return data, params["prompt_template"]
    attack = make_attack(params["attack"][attacked[1]])
    return (attack.evaluated(data, params["sample"]["question_column"]),
            attack.template(params["prompt_template"], data))


__all__ = ["ATTACKS", "Attack", "Target", "attack_keys", "evaluation_inputs", "make_attack", "register_attack"]
