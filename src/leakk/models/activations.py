"""Hidden activations of a causal LM at answer positions: what RMU steers and its retain term
keeps (``leakk.unlearn.rmu``, ``leakk.unlearn.retain``)."""

from __future__ import annotations

from typing import Any

from leakk.core.errors import ParamsError


def answer_position_mask(batch) -> Any:
    """(B, T) bool: positions whose next token is an answer token (labels shifted by one)."""
    import torch

    labels = batch["labels"]
    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[:, :-1] = labels[:, 1:] != -100
    return mask


def block_output(model, batch, layer: int):
    """The output of transformer block ``layer`` (0-based), (B, T, d) in fp32.

    ``hidden_states[0]`` is the embedding output, ``hidden_states[i + 1]`` block i's; the
    last entry has the final norm applied in GPT-2 and Llama, so the last block is refused."""
    states = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   output_hidden_states=True).hidden_states
    blocks = len(states) - 1
    if not 0 <= layer < blocks - 1:
        raise ParamsError(f"unlearn.<run>.layer: {layer} is not a steerable block of this model "
                          f"(0 … {blocks - 2}: it has {blocks} blocks and the last one's output is normalised)")
    return states[layer + 1].float()


def masked_mean_sq(diff, mask):
    """Per-example mean over the masked positions of the mean over hidden dims of diff²."""
    per_position = (diff ** 2).mean(-1)
    counts = mask.sum(-1).clamp(min=1)
    return (per_position * mask).sum(-1) / counts
