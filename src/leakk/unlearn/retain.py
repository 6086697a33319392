"""Retain terms behind a registry: what α multiplies in γ·forget + α·retain.

``unlearn.<run>.retain_loss`` names one (by default the method's ``default_retain_loss``:
``nll`` for all but RMU). A method that needs another retain term registers one here and edits
neither the loop nor another method.

- ``nll``: the SFT loss on the retain answers (GradDiff's original retain term).
- ``kl``: KL(π_ref ‖ π_θ) of the next-token distributions at the retain answers' positions,
  averaged over those positions (OpenUnlearning's GradDiff/NPO "KL" retain option), where
  π_ref is the frozen starting model: the full model for an unlearn run; for a RULE round,
  the full model under ``rule.<name>.reference: full`` (the default), else the round's start.
  It keeps the whole distribution on retain questions, not only the answer's likelihood.
- ``activation``: RMU's retain term, the mean squared distance between the method's steered
  block's output and the frozen starting model's, at the positions that predict an answer
  token; it needs a method with a ``layer`` (RMU).
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
    #: what the term averages over, "tokens" or "examples" (gradient accumulation weights by it)
    averages = "tokens"
    #: keys the method must have (the term reads them from it), checked when params load
    method_keys: tuple[str, ...] = ()

    def __init__(self, method=None) -> None:
        self.method = method

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


@RETAIN_LOSSES.register("activation")
class RetainActivation(RetainLoss):
    """mean over examples of the mean over answer-predicting positions and hidden dims of
    (h_ℓ(θ) − h_ℓ(frozen))², ℓ = the method's ``layer``."""

    needs_reference = True
    averages = "examples"
    method_keys = ("layer",)

    def __call__(self, model, batch, reference=None):
        import torch

        from leakk.models.activations import answer_position_mask, block_output, masked_mean_sq

        if reference is None:
            raise ValueError("retain_loss activation needs the frozen reference model")
        with torch.no_grad():
            frozen = block_output(reference, batch, self.method.layer)
        return masked_mean_sq(block_output(model, batch, self.method.layer) - frozen,
                              answer_position_mask(batch)).mean()


def make_retain_loss(name: str | None, method=None) -> RetainLoss:
    """The retain term registered as ``name`` (None: ``method``'s default) for ``method``
    (``ParamsError`` naming the key if unknown, or if the method lacks a key the term reads)."""
    from leakk.core.errors import ParamsError

    name = name or getattr(method, "default_retain_loss", "nll")
    cls = RETAIN_LOSSES.get(name)
    missing = [k for k in cls.method_keys if not hasattr(method, k)]
    if missing:
        raise ParamsError(f"unlearn.<run>.retain_loss: {name!r} reads the method's {missing}, which "
                          f"{getattr(method, 'name', method)!r} does not have")
    return cls(method)
