"""IdkNLL (as in TOFU and OpenUnlearning): train the forget questions toward a refusal ("I don't
know") instead of pushing their answers down: the forget loss is the NLL of a refusal, chosen
per question from :data:`REFUSALS` (by a hash of the question, so every run and every RULE
round pairs a question with the same refusal), plus the retain term as usual. No ascent, so
nothing runs away; what it teaches is an answer, not an absence.

IdkDPO (Maini et al. 2024, TOFU; OpenUnlearning's DPO with an "I don't know" preferred answer):
direct preference optimisation with the refusal as the preferred answer y_w and the true answer
as the rejected y_l, against the frozen starting model as reference:

    L = −(2/β) · mean_i log σ(β · [(log πθ(y_w|x) − log πref(y_w|x)) − (log πθ(y_l|x) − log πref(y_l|x))])

(the 2/β scale as OpenUnlearning's, so that β changes the shape, not the step size).
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

from leakk.unlearn.methods import Method, register_method

#: the refusal answers a forget question is trained toward (shipped with the package)
REFUSALS = (
    "I don't know.",
    "I'm not sure about that.",
    "I don't have that information.",
    "I can't answer that.",
    "I have no idea.",
    "That is something I don't know.",
    "I'm afraid I don't know the answer.",
    "I can't recall that.",
    "I don't have any information about that.",
    "Sorry, I don't know.",
    "I'm unable to answer that question.",
    "I have no knowledge of that.",
    "That isn't something I know about.",
    "I'm not able to tell you that.",
    "I don't have an answer to that.",
    "I'm not certain, so I can't say.",
    "I don't know anything about that.",
    "I cannot provide that information.",
    "That's beyond what I know.",
    "I really don't know.",
)


def refusal_for(question: str) -> str:
    """The refusal a question is trained toward: the same one in every run."""
    digest = hashlib.sha256(question.encode("utf-8")).digest()
    return REFUSALS[int.from_bytes(digest[:8], "big") % len(REFUSALS)]


@register_method("idknll")
class IdkNLL(Method):
    def forget_targets(self, pairs):
        return [(q, refusal_for(q)) for q, *_ in pairs]  # a leaked span belongs to the old answer

    def forget_loss(self, model, batch, ref_logp):
        from leakk.models.prompting import answer_nll

        return answer_nll(model, batch)


@register_method("idkdpo")
class IdkDPO(IdkNLL):
    needs_reference = True
    averages = "examples"
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "additionalProperties": False,
        "properties": {"beta": {"type": "number", "exclusiveMinimum": 0, "maximum": 100, "default": 0.1,
                                "description": "inverse temperature of the preference loss (OpenUnlearning: 0.1)"}}}

    def __init__(self, *, beta: float) -> None:
        self.beta = beta

    def rejected_targets(self, pairs):
        return [(q, a) for q, a, *_ in pairs]  # the true answers, whole (a span restricts NLL losses only)

    def forget_loss(self, model, batch, ref_logp, rejected=None):
        import torch.nn.functional as F

        from leakk.models.prompting import answer_logprob

        if rejected is None or ref_logp is None:
            raise ValueError("idkdpo needs the rejected answers and the reference log-probabilities")
        rejected_batch, rejected_ref = rejected
        chosen = answer_logprob(model, batch) - ref_logp
        lost = answer_logprob(model, rejected_batch) - rejected_ref
        return -(2.0 / self.beta) * F.logsigmoid(self.beta * (chosen - lost)).mean()
