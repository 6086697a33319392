"""Relearning as an attack (Hu et al., arXiv 2406.13356; Deeb & Roger, arXiv 2410.08827): a
few fine-tuning steps on *part* of the forget set bring back the rest when unlearning hid the
knowledge instead of removing it.

The forget authors (groups) are split once by ``seed``: a ``fraction`` of them is "public".
With ``data: forget`` the model is fine-tuned on the public authors' QA (their training
phrasings); with ``data: retain`` on retain QA instead (benign relearning: does ordinary
further training undo unlearning?). Either way the attacked model is evaluated on the other
authors' forget questions only (:meth:`Relearn.evaluated`), so every leak it shows is of a
fact it was not shown. On retrain, which never saw a forget author, the held-out leak must
stay at zero: the control that the attack teaches nothing about the held-out authors.

The steps run through the shared training step (``finetune.train_loop``: the ``training:``
section's precision, accumulation and LoRA apply).
"""

from __future__ import annotations

import random
from typing import Any, ClassVar

import polars as pl

from leakk.attacks import Attack, Target, register_attack
from leakk.core.errors import ParamsError


def public_groups(data: pl.DataFrame, fraction: float, seed: int) -> list[str]:
    """The forget groups an attacker is given: ``round(fraction · groups)`` of them (at least
    one, and at least one left to evaluate), drawn by ``seed`` from the sorted group names."""
    groups = sorted(data.filter(pl.col("split") == "forget")["group"].unique().to_list())
    if len(groups) < 2:
        raise ParamsError(f"attack relearn: needs at least 2 forget groups to split, the benchmark has {len(groups)}")
    count = min(len(groups) - 1, max(1, round(fraction * len(groups))))
    return sorted(random.Random(seed).sample(groups, count))


@register_attack("relearn")
class Relearn(Attack):
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "additionalProperties": False,
        "properties": {
            "data": {"enum": ["forget", "retain"], "default": "forget",
                     "description": "what it trains on: the public forget authors' QA, or retain QA (benign)"},
            "fraction": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1, "default": 0.5,
                         "description": "share of the forget authors made public (never evaluated)"},
            "steps": {"type": "integer", "minimum": 1, "maximum": 100000, "default": 10,
                      "description": "optimiser steps"},
            "lr": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 1.0e-3},
            "batch_size": {"type": "integer", "minimum": 1, "maximum": 65536, "default": 16},
            "seed": {"type": "integer", "minimum": 0, "default": 0,
                     "description": "picks the public authors and the order of training examples"}}}

    def __init__(self, *, data: str, fraction: float, steps: int, lr: float, batch_size: int, seed: int) -> None:
        self.data, self.fraction, self.steps, self.lr, self.batch_size, self.seed = (
            data, fraction, steps, lr, batch_size, seed)

    def _public(self, data: pl.DataFrame) -> pl.Expr:
        """True on the public authors' forget rows."""
        return (pl.col("split") == "forget") & pl.col("group").is_in(public_groups(data, self.fraction, self.seed))

    def training_rows(self, data: pl.DataFrame) -> pl.DataFrame:
        """The QA rows the attacker fine-tunes on."""
        return data.filter(pl.col("split") == "retain" if self.data == "retain" else self._public(data))

    def evaluated(self, data: pl.DataFrame, question_column: str) -> pl.DataFrame:
        """Every row but the public authors' forget questions."""
        return data.filter(~self._public(data))

    def apply(self, model, target: Target) -> dict[str, Any]:
        from leakk.models.finetune import train_loop, training_pairs

        pairs = training_pairs(self.training_rows(target.data))
        log = train_loop(model, target.tokenizer, pairs, template=target.template, epochs=None, steps=self.steps,
                         lr=self.lr, batch_size=self.batch_size, warmup_ratio=0.0, weight_decay=0.0, seed=self.seed,
                         device=target.device, desc=f"relearn ({self.data})", training=target.training)
        return {"attack": "relearn", "data": self.data, "steps": self.steps, "lr": self.lr,
                "public_groups": public_groups(target.data, self.fraction, self.seed),
                "training_pairs": len(pairs), "final_loss": round(log[-1]["loss"], 4)}
