"""Weight quantization as an attack (Zhang et al., ICLR 2025, arXiv 2410.16454: 4-bit rounding
of an unlearned model brings much of the forgotten knowledge back; 8-bit barely does).

Round-to-nearest, symmetric, per group of ``group_size`` consecutive input weights of every
output channel of every linear layer (``nn.Linear`` and GPT-2's ``Conv1D``; embeddings stay
as they are): scale = max|w| / (2^(bits−1) − 1) per group, w ← round(w / scale) · scale,
clamped to the signed range. The folder keeps the dequantized weights in the model's own
dtype, so every backend samples exactly what an int-``bits`` model would compute with them.
Runs on a CPU; no kernel library needed.
"""

from __future__ import annotations

from typing import Any, ClassVar

from leakk.attacks import Attack, Target, register_attack


def fake_quantize(weight, bits: int, group_size: int):
    """``weight`` (out, in) rounded to ``bits``-bit signed integers per group of ``group_size``
    inputs and scaled back (the input count need not divide by the group size)."""
    import torch

    out_features, in_features = weight.shape
    w = weight.detach().float()
    pad = (-in_features) % group_size
    if pad:
        w = torch.nn.functional.pad(w, (0, pad))
    groups = w.reshape(out_features, -1, group_size)
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
                           "description": "consecutive input weights sharing one scale"}}}

    def __init__(self, *, bits: int, group_size: int) -> None:
        self.bits, self.group_size = bits, group_size

    def apply(self, model, target: Target | None = None) -> dict[str, Any]:
        import torch

        tied = model.get_output_embeddings()
        layers = 0
        with torch.no_grad():
            for _, module, transposed in linear_weights(model):
                if module is tied:  # the output head is the (tied) embedding: left as it is
                    continue
                w = module.weight.t() if transposed else module.weight
                q = fake_quantize(w, self.bits, self.group_size)
                module.weight.copy_(q.t() if transposed else q)
                layers += 1
        return {"attack": "quantize", "bits": self.bits, "group_size": self.group_size, "layers": layers}
