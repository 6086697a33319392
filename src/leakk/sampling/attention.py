"""Decoding attention for grouped-query models without copying the KV cache.

With a padding mask, transformers < 5.2x's SDPA path expands a GQA model's key/value heads to
the query heads (``repeat_kv``) at every decoding step: for Llama-3.2-1B's 32 query / 8
key-value heads, a 4× copy of the whole cache per layer and step, then read again by the
attention kernel. For one query token the G query heads of a group can instead attend as G
queries of one key-value head — ``(B, H, 1, D) → (B, H_kv, G, D)`` — with the same mask
broadcast over them: the same attention, reading the cache once. (Newer transformers do this
themselves, ``pack_gqa``; this makes it independent of the version.)

:func:`grouped_decoding` switches a model to it while the sampler runs; prefill (several query
tokens) and models without grouped heads go through transformers' own SDPA unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

NAME = "leakk_grouped_sdpa"


def grouped_sdpa(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                 attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                 **kwargs):
    """transformers' attention-function signature; returns ``(B, q_len, H, D)`` and no weights."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    b, heads, q_len, dim = query.shape
    kv_heads = key.shape[1]
    if q_len != 1 or kv_heads == heads or kwargs.get("position_bias") is not None or kwargs.get("softcap"):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    q = query.reshape(b, kv_heads, heads // kv_heads, dim)
    mask = attention_mask
    if mask is not None and mask.dim() == 4 and mask.shape[1] != 1:  # a per-head mask: group it the same way
        mask = mask.reshape(b, kv_heads, heads // kv_heads, mask.shape[-1])
    out = torch.nn.functional.scaled_dot_product_attention(q, key, value, attn_mask=mask, scale=scaling)
    return out.reshape(b, heads, 1, dim).transpose(1, 2).contiguous(), None


def _register() -> bool:
    """Register :func:`grouped_sdpa` with transformers (and SDPA's mask builder for it); False
    where this transformers has no attention interface."""
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface, sdpa_mask
    except ImportError:
        return False
    if NAME not in ALL_MASK_ATTENTION_FUNCTIONS:
        AttentionInterface.register(NAME, grouped_sdpa)
        AttentionMaskInterface.register(NAME, sdpa_mask)
    return True


def _grouped(model) -> bool:
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    kv = getattr(cfg, "num_key_value_heads", None)
    return bool(kv) and kv < cfg.num_attention_heads


@contextlib.contextmanager
def grouped_decoding(model) -> Iterator[bool]:
    """While inside: a grouped-query model that runs transformers' SDPA decodes with
    :func:`grouped_sdpa` (yields whether it does); every other model is left as it is."""
    impl = getattr(model.config, "_attn_implementation", None)
    if impl != "sdpa" or not _grouped(model) or not _register():
        yield False
        return
    try:
        model.set_attn_implementation(NAME)
    except (ValueError, KeyError, AttributeError, ImportError):  # a transformers that refuses it: SDPA as is
        yield False
        return
    try:
        yield True
    finally:
        model.set_attn_implementation(impl)
