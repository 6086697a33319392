"""Training that scales: the optimiser step shared by fine-tuning, unlearning and RULE.

Fine-tuning (``finetune.train_loop``) and unlearning (``unlearn.loop.unlearn_loop``, which
every RULE round calls) differ only in their losses and schedules. What makes a 1B or 7B model
fit on one GPU is the same for both, so it lives here once, driven by the ``training:``
params section:

- ``precision``: bf16 autocast (weights, gradients and AdamW states stay fp32; matmuls run
  in bf16) — ``auto`` picks it on a CUDA device that supports bf16, fp32 elsewhere. Below fp32
  the losses project only the answer positions to the vocabulary (``prompting.answer_logits``).
- ``weights: bf16``: the model holds bf16 weights and gradients (nothing to cast per forward
  pass, half the bytes to read); the optimiser keeps the fp32 master copy and fp32 moments.
- ``gradient_accumulation``: a step's batch (``batch_size``, still the *effective* batch) is
  split into that many micro-batches, each weighted by its share of what the loss averages
  over (answer tokens or examples), so the accumulated gradient equals the full batch's.
- ``gradient_checkpointing``: activations recomputed in the backward pass.
- ``lora``: a ``peft`` LoRA adapter is trained instead of the full weights and merged into
  them at the end, so every saved model stays a plain HF safetensors folder.

At the defaults (fp32 on CPU, accumulation 1, no checkpointing, no LoRA) a step is one plain
forward, backward and AdamW step over the whole batch.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from leakk.core.errors import ParamsError
from leakk.models.prompting import collate

#: an encoded training example: (input_ids, labels with -100 outside the answer)
Example = tuple[list[int], list[int]]


@dataclass(frozen=True)
class TrainingSpec:
    """The ``training:`` params section (schema: ``params.schema.yaml``); the defaults are
    the offline miniature's plain fp32 full-weight training."""

    precision: str = "auto"
    gradient_accumulation: int = 1
    gradient_checkpointing: bool = False
    lora: dict[str, Any] | None = None
    weights: str = "fp32"

    @classmethod
    def from_params(cls, section: dict[str, Any] | None, source: str = "training") -> TrainingSpec:
        """From a ``training:`` section, checked and defaults-filled by the params schema (so a
        partial ``lora: {r: 8}`` given to a loop directly gets the same defaults as params)."""
        from leakk.core.schema import section as schema_section

        return cls(**schema_section(section or {}, "training", source))

    def autocast_dtype(self, device: torch.device | str) -> torch.dtype | None:
        """bf16 when asked (``bf16``) or when ``auto`` meets a CUDA device with bf16; None = fp32."""
        if self.precision == "bf16":
            return torch.bfloat16
        if self.precision == "auto" and torch.device(device).type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None


def resolve(training: TrainingSpec | dict[str, Any] | None) -> TrainingSpec:
    """The spec a loop trains with: the one passed (a spec or a ``training:`` section), else the
    defaults (fp32 on CPU, no accumulation, checkpointing or LoRA)."""
    if isinstance(training, TrainingSpec):
        return training
    return TrainingSpec.from_params(training)


def autocast(spec: TrainingSpec, device: torch.device | str) -> contextlib.AbstractContextManager:
    """The forward pass's precision context (a no-op in fp32)."""
    dtype = spec.autocast_dtype(device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


# --- memory -------------------------------------------------------------------------------

def memory_estimate(weight_bytes: int, trainable_bytes: int, cast_bytes: int = 0,
                    master_bytes: int = 0) -> dict[str, int]:
    """Bytes of training state, activations excluded (they scale with micro-batch × length).

    weights: every parameter at its dtype; grads: one per trainable parameter, same dtype;
    AdamW: two moment tensors per trainable parameter, same dtype as the master copy (the
    weights themselves unless ``master_bytes``: an fp32 copy the optimiser keeps); casts: the
    half-precision copies autocast caches of trainable fp32 weights for the forward pass
    (frozen ones — LoRA's base — are cast per use and not kept).
    """
    est = {"weights": weight_bytes, "grads": trainable_bytes, "adam": 2 * (master_bytes or trainable_bytes),
           "casts": cast_bytes}
    if master_bytes:
        est["master"] = master_bytes
    return est


def model_memory(model, spec: TrainingSpec, device: torch.device | str) -> tuple[int, int, dict[str, int]]:
    """(parameters, trainable parameters, :func:`memory_estimate`) of a prepared model."""
    params = list(model.parameters())
    trainable = [p for p in params if p.requires_grad]
    dtype = spec.autocast_dtype(device)
    casts = sum(p.numel() for p in trainable if p.is_floating_point() and p.dtype == torch.float32) * \
        (dtype.itemsize if dtype else 0)
    master = 4 * sum(p.numel() for p in trainable) if spec.weights == "bf16" and spec.lora is None else 0
    est = memory_estimate(sum(p.numel() * p.element_size() for p in params),
                          sum(p.numel() * p.element_size() for p in trainable), casts, master)
    return sum(p.numel() for p in params), sum(p.numel() for p in trainable), est


def _count(n: int) -> str:
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(n)


def memory_line(n_params: int, n_trainable: int, est: dict[str, int], spec: TrainingSpec,
                device: torch.device | str) -> str:
    """One line for the log, e.g. ``memory estimate: 1.24B params (1.24B trainable; bf16
    autocast, accumulation 4, checkpointing) → ~22.2 GB before activations (weights 4.94, …)``."""
    total = sum(est.values())
    scale, unit = next((s, u) for s, u in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB"), (1, "B")) if total >= s or s == 1)
    how = ["bf16 autocast" if spec.autocast_dtype(device) else "fp32", f"accumulation {spec.gradient_accumulation}"]
    if spec.gradient_checkpointing:
        how.append("checkpointing")
    if spec.lora is not None:
        how.append(f"LoRA r={spec.lora['r']}")
    if spec.weights == "bf16" and spec.lora is None:
        how.append("bf16 weights, fp32 master")
    parts = ", ".join(f"{'AdamW' if k == 'adam' else k} {v / scale:.3g}" for k, v in est.items() if v)
    return (f"memory estimate: {_count(n_params)} params ({_count(n_trainable)} trainable; {', '.join(how)}) "
            f"→ ~{total / scale:.3g} {unit} before activations ({parts})")


# --- the step -----------------------------------------------------------------------------

def answer_tokens(example: Example) -> int:
    """Answer tokens an example contributes to a token-mean loss (labels shifted by one)."""
    return sum(1 for t in example[1][1:] if t != -100)


@dataclass
class Term:
    """One loss term of a step: its examples, its loss on a collated (micro-)batch, its
    coefficient, and what that loss averages over — ``tokens`` (answer-token mean, as
    ``answer_nll``) or ``examples`` (per-example mean, as NPO) — which sets each
    micro-batch's weight. ``loss(batch, part)`` gets the slice of ``examples`` it sees (to
    pick per-example extras such as NPO's reference log-probs)."""

    examples: list[Example]
    loss: Callable[[dict[str, torch.Tensor], slice], torch.Tensor]
    coef: float = 1.0
    averages: str = "tokens"

    def size(self, part: slice) -> int:
        chunk = self.examples[part]
        return sum(map(answer_tokens, chunk)) if self.averages == "tokens" else len(chunk)


def cosine_with_warmup(optimizer: torch.optim.Optimizer, warmup_steps: int,
                       total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup_steps``, then half a cosine down to 0 at ``total_steps``:
    transformers' ``get_cosine_schedule_with_warmup`` to the bit (tests/test_training_scale.py
    checks), without importing ``transformers.optimization``, which loads its Trainer
    utilities, peft and bitsandbytes: about 2 s at the start of every training job."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return float(step) / float(max(1, warmup_steps))
        progress = float(step - warmup_steps) / float(max(1, total_steps - warmup_steps))
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def micro_slices(n: int, parts: int) -> list[slice]:
    """``parts`` contiguous slices of ``range(n)``, sizes differing by at most one (empty ones
    when n < parts)."""
    q, r = divmod(n, parts)
    bounds = [0]
    for i in range(parts):
        bounds.append(bounds[-1] + q + (i < r))
    return [slice(a, b) for a, b in zip(bounds, bounds[1:])]


def checkpointing(model, on: bool) -> None:
    """Turn activation (gradient) checkpointing on or off, non-reentrant (it works when the
    inputs need no grad, as under LoRA's frozen embeddings). transformers 5 renamed
    ``gradient_checkpointing_*`` to ``activation_checkpointing_*``; use what is installed."""
    if hasattr(model, "activation_checkpointing_enable"):
        if on:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.activation_checkpointing_disable()
    elif on:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_disable()


@dataclass
class Trainer:
    """AdamW over a model prepared by ``spec``; ``step`` runs one optimiser step of
    accumulated micro-batches; ``finish`` merges LoRA and leaves the original model object
    a plain, trained HF model in eval mode, in the dtype it was loaded in (full-weight
    training of a half-precision checkpoint keeps fp32 master weights meanwhile)."""

    model: Any
    spec: TrainingSpec
    device: Any
    lr: float
    weight_decay: float
    schedule: Callable[[torch.optim.Optimizer], Any]
    pad_id: int
    base: Any = field(init=False)

    def __post_init__(self):
        self.base = self.model
        self._trainable = [p.requires_grad for p in self.base.parameters()]  # LoRA freezes them
        self._loaded = {p.dtype for p in self.base.parameters() if p.is_floating_point()}
        self.master: list[torch.Tensor] | None = None
        if self.spec.weights == "bf16" and self.spec.lora is None:
            if self.spec.autocast_dtype(self.device) != torch.bfloat16:
                raise ParamsError("training.weights=bf16 needs bf16 precision (training.precision: bf16, or auto "
                                  "on a CUDA device with bf16)")
            # the master copy is taken before rounding: training starts from the weights as loaded
            self.master = [p.detach().float().clone() for p in self.base.parameters() if p.requires_grad]
            for p in self.base.parameters():
                p.data = p.data.to(torch.bfloat16) if p.is_floating_point() else p.data
        elif self.spec.lora is None and self._loaded - {torch.float32}:
            # fp32 master weights: in bf16, an AdamW update of lr 1e-5 on a weight of 1e-2
            # rounds away (bf16 keeps ~3 digits). A LoRA base is frozen and stays as loaded.
            for p in self.base.parameters():
                p.data = p.data.float() if p.is_floating_point() else p.data
        if self.spec.gradient_checkpointing:
            checkpointing(self.base, True)
        if self.spec.lora is not None:
            try:
                from peft import LoraConfig, get_peft_model
            except ImportError:
                raise ParamsError("training.lora: needs the peft package (pip install 'leakk[lora]')") from None

            lora = self.spec.lora
            self.model = get_peft_model(self.base, LoraConfig(
                task_type="CAUSAL_LM", r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                target_modules=lora.get("target_modules")))
        n, n_train, est = model_memory(self.model, self.spec, self.device)
        print(memory_line(n, n_train, est, self.spec, self.device), file=sys.stderr, flush=True)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        # one fused kernel for every parameter's update on a GPU (the CPU keeps the default loop)
        fused = {"fused": True} if torch.device(self.device).type == "cuda" else {}
        self.opt = torch.optim.AdamW(self.master if self.master is not None else self.params, lr=self.lr,
                                     weight_decay=self.weight_decay, **fused)
        self.sched = self.schedule(self.opt)
        self.model.train()
        self.steps_done, self._start = 0, time.perf_counter()

    def step(self, terms: list[Term]) -> tuple[float, list[float]]:
        """One optimiser step over ``terms``; returns (Σ coef·loss, each term's loss) of the
        whole batch."""
        out = self.accumulate(terms)
        self.apply()
        return out

    def accumulate(self, terms: list[Term]) -> tuple[float, list[float]]:
        """Backward of each micro-batch into ``.grad``; returns the whole batch's losses.
        Each micro-batch's loss is weighted by its share of its term's tokens or examples (not
        1/accumulation: answers differ in length), so the summed gradient is the full batch's
        up to rounding."""
        accumulation = self.spec.gradient_accumulation
        slices = [micro_slices(len(t.examples), accumulation) for t in terms]
        whole = [t.size(slice(None)) for t in terms]
        total, values = 0.0, [0.0] * len(terms)
        for i in range(accumulation):
            loss = None
            for j, term in enumerate(terms):
                part = slices[j][i]
                if part.start == part.stop:
                    continue
                batch = {k: v.to(self.device) for k, v in collate(term.examples[part], self.pad_id).items()}
                weight = term.size(part) / whole[j] if whole[j] else 0.0
                with autocast(self.spec, self.device):
                    value = weight * term.loss(batch, part)
                values[j] += value.item()
                loss = term.coef * value if loss is None else loss + term.coef * value
            if loss is not None:
                loss.backward()
                total += loss.item()
        return total, values

    def apply(self) -> None:
        """Clip the accumulated gradient, step the optimiser and schedule, clear the gradient
        (with bf16 weights: the fp32 master copy steps, and the weights are rounded from it)."""
        if self.master is not None:
            for p, m in zip(self.params, self.master, strict=True):
                m.grad = None if p.grad is None else p.grad.float()
                p.grad = None
            torch.nn.utils.clip_grad_norm_(self.master, 1.0)
            self.opt.step()
            with torch.no_grad():
                torch._foreach_copy_(self.params, self.master)
        else:
            torch.nn.utils.clip_grad_norm_(self.params, 1.0)
            self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        self.steps_done += 1

    def lr_now(self) -> float:
        return self.sched.get_last_lr()[0]

    def finish(self):
        """Merge a LoRA adapter into the base weights (in place), undo checkpointing, eval mode.
        The wall-clock time goes to the job's log (stderr), never into an artifact: a re-run
        must write the same bytes."""
        seconds = time.perf_counter() - self._start
        print(f"trained {self.steps_done} steps in {seconds:.1f} s"
              + (f" ({seconds / self.steps_done:.2f} s/step)" if self.steps_done else ""), file=sys.stderr, flush=True)
        if self.spec.lora is not None:
            self.model.merge_and_unload()  # the base layers come back, holding W + BA
            for p, trainable in zip(self.base.parameters(), self._trainable, strict=True):
                p.requires_grad_(trainable)
        if self.master is not None:  # the weights as trained, not their bf16 rounding
            for p, m in zip(self.params, self.master, strict=True):
                p.data = m
            self.master = None
        if self.spec.lora is None and len(self._loaded) == 1:
            (dtype,) = self._loaded  # saved as loaded: the sampler then runs it like the start model
            for p in self.base.parameters():
                p.data = p.data.to(dtype) if p.is_floating_point() else p.data
        if self.spec.gradient_checkpointing:
            checkpointing(self.base, False)
        self.base.eval()
        return self.base
