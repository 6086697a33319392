"""Unlearning objectives behind a registry (total = γ·forget + α·retain, as OpenUnlearning).

A method is a small class: its forget loss and whether it needs a frozen reference model
or a retain term. SimNPO and others slot in as one more registered class.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from leakk.core.registry import Registry

if TYPE_CHECKING:  # torch is imported by the losses, so validating params stays light
    import torch

#: Registered method classes by name (``unlearn.<run>.method``).
METHODS: Registry[type["Method"]] = Registry("method", "unlearn.<run>.method")


def register_method(name: str):
    """Class decorator: register a :class:`Method` subclass under ``name``."""
    return METHODS.register(name)


def make_method(name: str, **params) -> "Method":
    """Build method ``name`` with its own hyper-parameters."""
    return METHODS.get(name)(**params)


class Method:
    """Base: ``forget_loss`` is minimised; ``uses_retain`` adds α·NLL(retain)."""

    name = "base"
    needs_reference = False
    uses_retain = True
    #: what ``forget_loss`` averages over: "tokens" (answer tokens, as ``answer_nll``) or
    #: "examples" — gradient accumulation weights each micro-batch by its share of these
    averages = "tokens"

    def __init__(self, beta: float = 0.1):
        self.beta = beta

    def forget_loss(self, model, batch: dict[str, "torch.Tensor"], ref_logp: "torch.Tensor | None") -> "torch.Tensor":
        raise NotImplementedError


@register_method("ga")
class GradAscent(Method):
    """−NLL(forget): push the forget answers' likelihood down, nothing else."""

    uses_retain = False

    def forget_loss(self, model, batch, ref_logp):
        from leakk.models.prompting import answer_nll

        return -answer_nll(model, batch)


@register_method("graddiff")
class GradDiff(GradAscent):
    """−NLL(forget) + α·NLL(retain)."""

    uses_retain = True


@register_method("npo")
class NPO(Method):
    """Negative preference optimisation (Zhang et al. 2024):
    −(2/β)·mean log σ(−β·(log πθ(y|x) − log πref(y|x))), log-probs summed over answer tokens.
    Equals (2/β)·log 2 when πθ = πref; bounded below by 0, unlike GA's unbounded descent."""

    needs_reference = True
    averages = "examples"

    def forget_loss(self, model, batch, ref_logp):
        import torch.nn.functional as F

        from leakk.models.prompting import answer_logprob

        log_ratio = answer_logprob(model, batch) - ref_logp
        return -(2.0 / self.beta) * F.logsigmoid(-self.beta * log_ratio).mean()
