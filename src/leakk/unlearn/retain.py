"""Retain terms behind a registry: what α multiplies in γ·forget + α·retain.

``unlearn.<run>.retain_loss`` names one (``nll`` by default). A method that needs another
retain term registers one here and edits neither the loop nor another method.

- ``nll``: the SFT loss on the retain answers (GradDiff's original retain term).
- ``kl``: KL(π_ref ‖ π_θ) of the next-token distributions at the retain answers' positions,
  averaged over those positions (OpenUnlearning's GradDiff/NPO "KL" retain option), where
  π_ref is the frozen starting model: the full model for an unlearn run; for a RULE round,
  the full model under ``rule.<name>.reference: full`` (the default), else the round's start.
  It keeps the whole distribution on retain questions, not only the answer's likelihood.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from leakk.core.registry import Registry

if TYPE_CHECKING:
    import torch

#: Registered retain terms by name (``unlearn.<run>.retain_loss``)
RETAIN_LOSSES: Registry[type["RetainLoss"]] = Registry("retain loss", "unlearn.<run>.retain_loss")


class RetainLoss:
    """Base: ``__call__(model, batch, reference)`` is the retain term of one batch."""

    name = "base"
    #: whether the term needs a frozen reference model in memory (the loop keeps one)
    needs_reference = False

    def __call__(self, model, batch: dict[str, "torch.Tensor"], reference=None) -> "torch.Tensor":
        raise NotImplementedError


@RETAIN_LOSSES.register("nll")
class RetainNLL(RetainLoss):
    """Mean token-level NLL over the retain answers' tokens."""

    def __call__(self, model, batch, reference=None):
        from leakk.models.prompting import answer_nll

        return answer_nll(model, batch)


@RETAIN_LOSSES.register("kl")
class RetainKL(RetainLoss):
    """mean over answer positions of Σ_v π_ref(v) (log π_ref(v) − log π_θ(v))."""

    needs_reference = True

    def __call__(self, model, batch, reference=None):
        import torch

        from leakk.models.prompting import answer_positions

        if reference is None:
            raise ValueError("retain_loss kl needs the frozen reference model")
        with torch.no_grad():
            ref_logits, _, _ = answer_positions(reference, batch)
        logits, _, _ = answer_positions(model, batch)
        ref_logp = torch.log_softmax(ref_logits, dim=-1)
        return torch.nn.functional.kl_div(torch.log_softmax(logits, dim=-1), ref_logp, log_target=True,
                                          reduction="none").sum(-1).mean()


def make_retain_loss(name: str) -> RetainLoss:
    """The retain term registered as ``name`` (``ParamsError`` naming the key if unknown)."""
    return RETAIN_LOSSES.get(name)()
