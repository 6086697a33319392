"""Weight quantization as an attack (Zhang et al., ICLR 2025, arXiv 2410.16454: 4-bit rounding
of an unlearned model brings much of the forgotten knowledge back; 8-bit barely does).

Round-to-nearest, symmetric, per group of ``group_size`` consecutive input weights of every
output channel of every linear layer (``nn.Linear`` and GPT-2's ``Conv1D``; embeddings stay
as they are): scale = max|w| / (2^(bits−1) − 1) per group, w ← round(w / scale) · scale,
clamped to the signed range. The folder keeps the dequantized weights in the model's own
dtype, so every backend samples exactly what an int-``bits`` model would compute with them.
Runs on a CPU; no kernel library needed.

``format: nf4`` is QLoRA's 4-bit NormalFloat (Dettmers et al. 2023, the ``bnb_4bit_quant_type
="nf4"`` of bitsandbytes that Zhang et al. also attack with): per block of ``group_size``
weights, w / max|w| is rounded to the nearest of 16 fixed levels (:data:`NF4_LEVELS`, normal
quantiles), then scaled back: with ``group_size: 64`` (bitsandbytes' block size; the
default 32 is finer) the values a bitsandbytes NF4 layer dequantizes to, without its double
quantization of the scales (tests/test_attacks.py checks them against bitsandbytes'
``quantize_4bit``/``dequantize_4bit``), computed here in plain torch so it runs on any device.
"""

from __future__ import annotations

from typing import Any, ClassVar

from leakk.attacks import Attack, Target, register_attack
from leakk.core.errors import ParamsError

#: the 16 NF4 code values (bitsandbytes' ``NF4`` map, QLoRA appendix E): 8 positive and 7
#: negative quantiles of N(0, 1) plus an exact zero, normalised to [−1, 1]
NF4_LEVELS = (
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0,
)


def fake_quantize(weight, bits: int, group_size: int, codebook: tuple[float, ...] | None = None):
    """``weight`` (out, in) rounded to ``bits``-bit signed integers per group of ``group_size``
    inputs and scaled back (the input count need not divide by the group size); with
    ``codebook`` (levels in [−1, 1], e.g. :data:`NF4_LEVELS`), w / max|w| of each group is
    rounded to the nearest level instead."""
    import torch

    out_features, in_features = weight.shape
    w = weight.detach().float()
    pad = (-in_features) % group_size
    if pad:
        w = torch.nn.functional.pad(w, (0, pad))
    groups = w.reshape(out_features, -1, group_size)
    if codebook is not None:
        absmax = groups.abs().amax(-1, keepdim=True)
        absmax = torch.where(absmax > 0, absmax, torch.ones_like(absmax))
        levels = torch.tensor(codebook, dtype=torch.float32, device=groups.device)
        nearest = (groups / absmax).unsqueeze(-1).sub(levels).abs().argmin(-1)  # ties: the lower level
        q = levels[nearest] * absmax
    else:
        top = 2 ** (bits - 1) - 1
        scale = groups.abs().amax(-1, keepdim=True) / top
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero group stays zero
        q = torch.clamp(torch.round(groups / scale), -top - 1, top) * scale
    return q.reshape(out_features, -1)[:, :in_features].to(weight.dtype)


def linear_weights(model):
    """(name, module, transposed) of every linear layer: GPT-2's Conv1D keeps (in, out)."""
    import torch
    from transformers.pytorch_utils import Conv1D

    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            yield name, module, False
        elif isinstance(module, Conv1D):
            yield name, module, True


@register_attack("quantize")
class Quantize(Attack):
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "additionalProperties": False,
        "properties": {
            "bits": {"type": "integer", "minimum": 2, "maximum": 8, "default": 4,
                     "description": "signed integer width (4: the attack of the literature; 8: its negative control)"},
            "group_size": {"type": "integer", "minimum": 1, "maximum": 65536, "default": 32,
                           "description": "consecutive input weights sharing one scale"},
            "format": {"enum": ["int", "nf4"], "default": "int",
                       "description": "int: uniform signed integers; nf4: QLoRA's 4-bit NormalFloat (bits: 4)"}}}

    def __init__(self, *, bits: int, group_size: int, format: str) -> None:  # noqa: A002 (the params key)
        if format == "nf4" and bits != 4:
            raise ParamsError(f"bits: format nf4 is a 4-bit code, not {bits} (rule: bits 4 with nf4)")
        self.bits, self.group_size, self.format = bits, group_size, format

    def apply(self, model, target: Target | None = None) -> dict[str, Any]:
        import torch

        tied = model.get_output_embeddings()
        layers = 0
        with torch.no_grad():
            for _, module, transposed in linear_weights(model):
                if module is tied:  # the output head is the (tied) embedding: left as it is
                    continue
                w = module.weight.t() if transposed else module.weight
                q = fake_quantize(w, self.bits, self.group_size, NF4_LEVELS if self.format == "nf4" else None)
                module.weight.copy_(q.t() if transposed else q)
                layers += 1
        return {"attack": "quantize", "bits": self.bits, "group_size": self.group_size, "format": self.format,
                "layers": layers}
