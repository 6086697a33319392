"""Weighted gradient ascent (WGA; Wang et al. 2025, "Rethinking LLM unlearning objectives: a
gradient perspective and go beyond", arXiv 2502.19301): gradient ascent whose every answer
token is weighted by its own probability, detached, to the power β:

    L = mean_t w_t · log πθ(y_t | x, y_<t),   w_t = sg(πθ(y_t | x, y_<t))^β

Tokens the model already finds unlikely get little push, so the ascent does not run away on
them the way plain GA does (β = 0 is GA).
"""

from __future__ import annotations

from typing import Any, ClassVar

from leakk.unlearn.methods import Method, register_method


@register_method("wga")
class WGA(Method):
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "additionalProperties": False,
        "properties": {"beta": {"type": "number", "minimum": 0, "maximum": 100, "default": 1.0,
                                "description": "exponent of the token weight πθ(y_t)^β (0: plain GA)"}}}

    def __init__(self, *, beta: float) -> None:
        self.beta = beta

    def forget_loss(self, model, batch, ref_logp):
        import torch

        from leakk.models.prompting import answer_positions

        logits, labels, _ = answer_positions(model, batch)
        token_lp = torch.log_softmax(logits, -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
        weight = token_lp.detach().exp() ** self.beta
        return (weight * token_lp).mean()
