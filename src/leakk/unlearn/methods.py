"""Unlearning objectives behind a registry (total = γ·forget + α·retain, as OpenUnlearning).

A method is a small class: its forget loss, whether it needs a frozen reference model or a
retain term, and ``params_schema``, the JSON Schema of its own keys in ``unlearn.<run>``
(names, defaults, ranges; ``beta`` for NPO) — the only place their defaults are written. The
loop's keys (steps, lr, batch_size, alpha, gamma, warmup_steps, weight_decay, stop) are the
central schema's, shared by every method. A new method (SimNPO, RMU, …) is one module with one
registered class, imported in :mod:`leakk.unlearn`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from leakk.core.registry import Registry
from leakk.core.schema import filled

if TYPE_CHECKING:  # torch is imported by the losses, so validating params stays light
    import torch

#: Registered method classes by name (``unlearn.<run>.method``); the methods of their own
#: module are imported on first use.
METHODS: Registry[type["Method"]] = Registry("method", "unlearn.<run>.method", lazy={
    "simnpo": "leakk.unlearn.simnpo", "wga": "leakk.unlearn.wga", "npo_entropy": "leakk.unlearn.entropy",
    "idknll": "leakk.unlearn.idk", "idkdpo": "leakk.unlearn.idk", "rmu": "leakk.unlearn.rmu"})


def register_method(name: str):
    """Class decorator: register a :class:`Method` subclass under ``name``."""
    return METHODS.register(name)


def make_method(name: str, **params: Any) -> "Method":
    """Build method ``name`` from its own hyper-parameters, checked and defaults-filled by its
    schema (params.yaml's were checked at load; this re-check is for code that builds one itself)."""
    cls = METHODS.get(name)
    return cls(**filled(params, cls.params_schema, f"method {name!r}"))


class Method:
    """Base: ``forget_loss`` is minimised; ``uses_retain`` adds α·NLL(retain)."""

    name = "base"
    needs_reference = False
    uses_retain = True
    #: what ``forget_loss`` averages over: "tokens" (answer tokens, as ``answer_nll``) or
    #: "examples" — gradient accumulation weights each micro-batch by its share of these
    averages = "tokens"
    #: the retain term (:mod:`leakk.unlearn.retain`) when ``retain_loss`` is not given
    default_retain_loss = "nll"
    #: JSON Schema of the method's own keys in ``unlearn.<run>`` (with their defaults)
    params_schema: ClassVar[dict[str, Any]] = {"type": "object", "additionalProperties": False, "properties": {}}

    def forget_loss(self, model, batch: dict[str, "torch.Tensor"], ref_logp: "torch.Tensor | None",
                    rejected: "tuple[dict[str, torch.Tensor], torch.Tensor | None] | None" = None) -> "torch.Tensor":
        """The forget term of one (micro-)batch. ``ref_logp``: the reference model's log π of
        the batch's answers (methods with ``needs_reference``); ``rejected``: the rejected
        answers' batch and reference log π (methods with :meth:`rejected_targets`)."""
        raise NotImplementedError

    def trains(self, name: str) -> bool:
        """Whether the parameter called ``name`` trains (all do, unless a method such as RMU
        restricts the update to some layers)."""
        return True

    def rejected_targets(self, pairs: list[tuple]) -> list[tuple] | None:
        """For a preference method (IdkDPO): the (question, answer) pairs whose likelihood the
        forget targets are preferred over, one per forget pair; None for every other method."""
        return None

    def forget_targets(self, pairs: list[tuple]) -> list[tuple]:
        """The (question, answer[, span]) pairs the forget loss trains on; a method that trains
        toward another answer (IdkNLL: a refusal) replaces the answers here."""
        return pairs


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
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "additionalProperties": False,
        "properties": {"beta": {"type": "number", "exclusiveMinimum": 0, "default": 0.1,
                                "description": "inverse temperature of the preference loss"}}}

    def __init__(self, *, beta: float) -> None:
        self.beta = beta

    def forget_loss(self, model, batch, ref_logp):
        import torch.nn.functional as F

        from leakk.models.prompting import answer_logprob

        log_ratio = answer_logprob(model, batch) - ref_logp
        return -(2.0 / self.beta) * F.logsigmoid(-self.beta * log_ratio).mean()
