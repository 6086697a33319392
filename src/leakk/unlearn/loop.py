"""The unlearning loop shared by GA/GradDiff/NPO and by every RULE round."""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Sequence
from typing import Any

import torch

from leakk.core.errors import ParamsError
from leakk.core.progress import tqdm
from leakk.models.prompting import answer_logprob, collate, encode_example
from leakk.models.training import Term, Trainer, TrainingSpec, autocast, resolve
from leakk.unlearn.methods import Method
from leakk.unlearn.retain import make_retain_loss


@torch.no_grad()
def reference_logprobs(model, examples, pad_id: int, device, batch_size: int = 64) -> torch.Tensor:
    """log πref(answer | prompt) of every forget example under the *starting* model.

    Computed once before training, so NPO needs no second model in memory.
    """
    model.eval()
    out = []
    for i in range(0, len(examples), batch_size):
        batch = {k: v.to(device) for k, v in collate(examples[i:i + batch_size], pad_id).items()}
        out.append(answer_logprob(model, batch).float())
    return torch.cat(out) if out else torch.zeros(0, device=device)


class _Cycler:
    """Endless seeded shuffled batches of indices."""

    def __init__(self, size: int, batch_size: int, rng: random.Random):
        self.size, self.batch_size, self.rng, self.order = size, batch_size, rng, []

    def next(self) -> list[int]:
        if len(self.order) < self.batch_size:
            extra = list(range(self.size))
            self.rng.shuffle(extra)
            self.order += extra
        batch, self.order = self.order[: self.batch_size], self.order[self.batch_size:]
        return batch


#: a stop check: called with the number of steps done, returns log fields and ``stop`` (bool)
StopCheck = Callable[[int], dict[str, Any]]


def unlearn_loop(
    model, tokenizer, method: Method, forget_pairs: Sequence[tuple], retain_pairs: list[tuple[str, str]], *,
    template: str, steps: int, lr: float, batch_size: int, seed: int, device, alpha: float = 1.0,
    gamma: float = 1.0, warmup_steps: int = 0, weight_decay: float = 0.0, retain_loss: str | None = None,
    desc: str = "unlearn", step_offset: int = 0, reference=None, check: StopCheck | None = None, check_every: int = 0,
    training: TrainingSpec | dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Run up to ``steps`` optimiser steps of γ·forget + α·retain; returns a per-step log.

    ``forget_pairs`` are (question, answer) or (question, answer, span): a span (character
    offsets into the stripped answer) restricts the forget loss to the tokens it covers.
    ``reference`` is the model NPO's log πref comes from (default: ``model`` before the first
    step), and π_ref of a ``retain_loss`` that needs one (:mod:`leakk.unlearn.retain`; default:
    a frozen copy of ``model``; None: the method's default term). A preference method (IdkDPO)
    also gets its rejected answers' batch; a method that trains some parameters only (RMU) has
    the others frozen for the run. ``check``, called every ``check_every`` steps and after the
    last, may stop the run early (its fields join that step's log row). ``batch_size`` is the effective batch;
    ``training`` (default: the active ``training:`` section) sets precision, accumulation,
    checkpointing and LoRA (:mod:`leakk.models.training`); a LoRA adapter is merged into ``model``
    before returning."""
    pad = tokenizer.pad_token_id
    spec = resolve(training)
    forget = [encode_example(q, a, tokenizer, template, span=rest[0] if rest else None)
              for q, a, *rest in method.forget_targets(forget_pairs)]
    rejected_pairs = method.rejected_targets(forget_pairs)
    rejected = None if rejected_pairs is None else [encode_example(q, a, tokenizer, template) for q, a in rejected_pairs]
    retain = [encode_example(q, a, tokenizer, template) for q, a in retain_pairs]
    start = reference if reference is not None else model
    with autocast(spec, device):  # the reference in the training precision: log-ratio 0 at step 0
        ref = reference_logprobs(start, forget, pad, device) if method.needs_reference else None
        rejected_ref = reference_logprobs(start, rejected, pad, device) \
            if method.needs_reference and rejected is not None else None
    use_retain = method.uses_retain and alpha > 0 and retain
    retain_term = make_retain_loss(retain_loss, method)
    frozen = None
    if use_retain and retain_term.needs_reference:  # a frozen copy, taken before LoRA wraps the model
        frozen = (reference if reference is not None else copy.deepcopy(model)).eval().requires_grad_(False)
    kept = _freeze_untrained(model, method, spec)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    f_batches = _Cycler(len(forget), min(batch_size, len(forget)), rng)
    r_batches = _Cycler(len(retain), batch_size, rng) if use_retain else None
    trainer = Trainer(model, spec, device, lr=lr, weight_decay=weight_decay, pad_id=pad, schedule=lambda opt:
                      torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, warmup_steps))))

    def forget_term(idx: list[int]) -> Term:
        f_ref = ref[idx] if ref is not None else None
        if rejected is None:
            return Term([forget[i] for i in idx], lambda b, part: method.forget_loss(
                trainer.model, b, f_ref[part] if f_ref is not None else None), gamma, method.averages)
        r_ref = rejected_ref[idx] if rejected_ref is not None else None
        chunk = [rejected[i] for i in idx]

        def loss(b, part):
            other = {k: v.to(b["input_ids"].device) for k, v in collate(chunk[part], pad).items()}
            return method.forget_loss(trainer.model, b, f_ref[part] if f_ref is not None else None,
                                      rejected=(other, r_ref[part] if r_ref is not None else None))
        return Term([forget[i] for i in idx], loss, gamma, method.averages)

    log = []
    bar = tqdm(range(steps), desc=desc, unit="step", cap=check is not None)  # a stop check may end it early
    try:
        for step in bar:
            terms = [forget_term(f_batches.next())]
            if use_retain:
                terms.append(Term([retain[i] for i in r_batches.next()],
                                  lambda b, _: retain_term(trainer.model, b, frozen), alpha, retain_term.averages))
            loss, (f_loss, *r_loss) = trainer.step(terms)
            log.append({"step": step_offset + step + 1, "loss": loss, "forget_loss": f_loss,
                        "retain_loss": r_loss[0] if r_loss else float("nan"), "lr": trainer.lr_now()})
            if check is not None and check_every and ((step + 1) % check_every == 0 or step + 1 == steps):
                log[-1].update(check(step + 1))
                model.train()  # the check samples in eval mode
                if "greedy_leak" in log[-1]:
                    bar.set_postfix(greedy_leak=f"{log[-1]['greedy_leak']:.3f}")
                if log[-1]["stop"]:
                    bar.close()
                    break
        trainer.finish()
    finally:
        for p, grad in kept:
            p.requires_grad_(grad)
    return log


def _freeze_untrained(model, method: Method, spec) -> list[tuple[torch.nn.Parameter, bool]]:
    """Freeze the parameters ``method`` does not train (RMU: all but some MLPs); returns them with
    their ``requires_grad`` to restore. LoRA adapts its own target modules, so a method that
    restricts its parameters cannot run under it."""
    frozen = [(p, p.requires_grad) for n, p in model.named_parameters() if not method.trains(n)]
    if frozen and spec.lora is not None:
        raise ParamsError(f"training.lora: method {method.name!r} trains only some parameters and LoRA would "
                          "train others; run it with full weights (remove training.lora)")
    if len(frozen) == sum(1 for _ in model.parameters()):
        raise ParamsError(f"method {method.name!r} trains no parameter of this model (check its layer keys)")
    for p, _ in frozen:
        p.requires_grad_(False)
    return frozen
