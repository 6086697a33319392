"""SimNPO (Fan et al. 2024, "Simplicity prevails: rethinking negative preference optimization
for LLM unlearning", arXiv 2410.07163): NPO without a reference model, on the length-normalised
log-likelihood, with a reward margin δ:

    L = −(2/β) · mean_i log σ(−(β/|y_i|) · log πθ(y_i|x_i) − δ)

Normalising by the answer length |y_i| keeps long answers from dominating, and dropping the
reference removes NPO's bias toward the starting model's likelihoods.
"""

from __future__ import annotations

from typing import Any, ClassVar

from leakk.unlearn.methods import Method, register_method


@register_method("simnpo")
class SimNPO(Method):
    averages = "examples"
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "additionalProperties": False,
        "properties": {
            "beta": {"type": "number", "exclusiveMinimum": 0, "maximum": 100, "default": 4.5,
                     "description": "inverse temperature (OpenUnlearning's SimNPO default 4.5)"},
            "delta": {"type": "number", "minimum": 0, "maximum": 100, "default": 0.0,
                      "description": "reward margin δ (γ in the paper; 0 = none)"}}}

    def __init__(self, *, beta: float, delta: float) -> None:
        self.beta, self.delta = beta, delta

    def forget_loss(self, model, batch, ref_logp):
        import torch.nn.functional as F

        from leakk.models.prompting import answer_logprob

        length = (batch["labels"][:, 1:] != -100).sum(-1).clamp(min=1)
        normalised = answer_logprob(model, batch) / length
        return -(2.0 / self.beta) * F.logsigmoid(-self.beta * normalised - self.delta).mean()
