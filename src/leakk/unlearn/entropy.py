"""NPO with an entropy term on the forget answers (Scholten et al. 2024, "A probabilistic
perspective on unlearning and alignment for large language models", arXiv 2410.03523).

Unlearning that only checks greedy output leaves the rest of the output distribution free to
put mass on the forgotten answer, which sampling then finds. Scholten et al. add the entropy
of the model's next-token distribution on the forget answers to the unlearning loss, so that
the distribution concentrates on what greedy decoding (already forgotten) produces:

    L = L_NPO + λ · mean_i [ mean_t H(πθ(· | x_i, y_i,<t)) ]

with H(p) = −Σ_v p_v log p_v (each example's tokens averaged first, then the examples, as
NPO averages examples).
"""

from __future__ import annotations

from typing import Any, ClassVar

from leakk.unlearn.methods import NPO, register_method


@register_method("npo_entropy")
class NPOEntropy(NPO):
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "additionalProperties": False,
        "properties": {**NPO.params_schema["properties"],
                       "weight": {"type": "number", "minimum": 0, "maximum": 100, "default": 1.0,
                                  "description": "λ, the weight of the mean token entropy"}}}

    def __init__(self, *, beta: float, weight: float) -> None:
        super().__init__(beta=beta)
        self.weight = weight

    def forget_loss(self, model, batch, ref_logp):
        import torch

        from leakk.models.prompting import answer_positions

        logits, _, example = answer_positions(model, batch)
        logp = torch.log_softmax(logits, -1)
        entropy = -(logp.exp() * logp).sum(-1)
        n = batch["labels"].shape[0]
        tokens = torch.zeros(n, device=entropy.device).index_add(0, example, torch.ones_like(entropy))
        per_example = torch.zeros(n, device=entropy.device).index_add(0, example, entropy) / tokens.clamp(min=1)
        return super().forget_loss(model, batch, ref_logp) + self.weight * per_example.mean()
