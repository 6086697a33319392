"""The Hugging Face sampling backend: many completions per prompt, fast on any device.

What makes it fast, versus the usual ``generate`` call per question with n copies of the
prompt:
- questions are batched together, sorted by prompt length and left-padded;
- each prompt is prefilled once and its KV cache is then expanded to its samples;
- finished sequences are dropped from the batch (and their cache rows freed);
- everything runs under ``torch.inference_mode``.
Draws come from :mod:`leakk.sampling.rng`, so a completion depends only on (seed, qid,
sample_idx), not on how the work was batched or sharded.
"""

from __future__ import annotations

import inspect
import logging
import math
import os

import numpy as np
import torch

from leakk.core.progress import tqdm
from leakk.sampling.attention import grouped_decoding
from leakk.sampling.backend import Completion
from leakk.sampling.decoding import Decoding
from leakk.sampling.rng import gumbel, keys_tensor, row_keys

#: drop finished rows once they are this fraction of the batch (a cache copy costs about
#: one decoding step, so dropping after every single finish would cost more than it saves)
COMPACT_FRACTION = 0.25
#: grow the KV cache in preallocated buffers (see PreallocatedKV); False = HF's own cache
PREALLOCATE = True
#: transformers versions [low, high) whose DynamicCache internals PreallocatedKV was tested
#: against (keep equal to the bound in pyproject.toml); outside it, HF's own cache is used
TESTED_TRANSFORMERS = ("4.56", "5.25")

log = logging.getLogger(__name__)
_warned: set[str] = set()


def _fallback(reason: str) -> None:
    """Say once per reason that the sampler uses HF's own cache (correct, slower)."""
    if reason not in _warned:
        _warned.add(reason)
        log.warning("sampler: %s; using transformers' own KV cache instead of PreallocatedKV "
                    "(same results, slower)", reason)


def _cache_arg(model) -> str:  # pragma: no mutate block
    """Name of the KV-cache argument: ``cache`` (transformers ≥ 5.2x) or ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _cache_of(out):  # pragma: no mutate block
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


class PreallocatedKV:  # pragma: no mutate block
    """Grow an HF DynamicCache in place instead of by concatenation.

    HF's DynamicCache concatenates every layer's keys and values with each new token, so a
    completion of L tokens copies O(L²) cache (measured: a fifth of the tiny model's CPU
    sampling time). Here each layer's keys/values live in a buffer with room for every
    token still to come; a step writes one slice and the layer sees a view. Dropping rows
    copies only the live part. This relies on transformers internals, so it is used only
    where :meth:`unsupported` finds none of its assumptions broken, and checked after every
    step (:meth:`intact`); anything else falls back to HF's own cache with a warning, once.
    """

    def __init__(self, cache, extra_tokens: int, rows: torch.Tensor):
        """Take over ``cache``, expanded to ``rows`` (prompt index of each sequence)."""
        self.state = []
        for layer in cache.layers:
            keys, values = layer.keys, layer.values
            _, heads, length, dim = keys.shape
            kbuf = keys.new_empty(len(rows), heads, length + extra_tokens, dim)
            vbuf = values.new_empty(len(rows), values.shape[1], length + extra_tokens, values.shape[-1])
            kbuf[:, :, :length].copy_(keys[rows])
            vbuf[:, :, :length].copy_(values[rows])
            st = {"k": kbuf, "v": vbuf, "len": length, "layer": layer}
            layer.update = self._updater(st)
            self._publish(st)
            self.state.append(st)

    @staticmethod
    def unsupported(cache) -> str | None:
        """Why ``cache`` cannot be taken over (None: it can): a transformers version outside
        :data:`TESTED_TRANSFORMERS`, or layers that are not plain ``DynamicLayer`` objects with 4-d
        keys (sliding-window, quantised, static and linear-attention layers keep their own
        update rules, which PreallocatedKV would bypass)."""
        import transformers
        from packaging.version import Version

        low, high = map(Version, TESTED_TRANSFORMERS)
        if not low <= Version(transformers.__version__) < high:
            return (f"transformers {transformers.__version__} is outside the tested range "
                    f"[{TESTED_TRANSFORMERS[0]}, {TESTED_TRANSFORMERS[1]})")
        try:
            from transformers.cache_utils import DynamicLayer
        except ImportError:
            return "transformers.cache_utils has no DynamicLayer"
        layers = getattr(cache, "layers", None)
        if not layers:
            return f"{type(cache).__name__} has no per-layer cache"
        for layer in layers:
            if type(layer) is not DynamicLayer:
                return f"cache layer {type(layer).__name__} is not a DynamicLayer"
            keys = getattr(layer, "keys", None)
            if not (isinstance(keys, torch.Tensor) and keys.dim() == 4):
                return "cache layer keys are not 4-d tensors"
        return None

    def intact(self) -> bool:
        """Whether every layer still holds this object's views, i.e. the model called the
        layers' ``update`` (checked after each step: a transformers that bypassed it would
        otherwise leave the buffers stale)."""
        return all(st["layer"].keys.shape[-2] == st["len"] and st["layer"].keys.data_ptr() == st["k"].data_ptr()
                   for st in self.state)

    @staticmethod
    def _publish(st) -> None:
        st["layer"].keys = st["k"][:, :, : st["len"]]
        st["layer"].values = st["v"][:, :, : st["len"]]

    def _updater(self, st):
        def update(key_states, value_states, *args, **kwargs):
            new = key_states.shape[-2]
            st["k"][:, :, st["len"]: st["len"] + new] = key_states
            st["v"][:, :, st["len"]: st["len"] + new] = value_states
            st["len"] += new
            self._publish(st)
            return st["layer"].keys, st["layer"].values
        return update

    def release(self) -> None:
        """Give the buffers back now: each layer's ``update`` closure refers to its state and the
        state to the layer, a cycle that only the garbage collector would free — holding a
        whole batch's KV cache (on a GPU, half its memory) into the next batch and beyond."""
        for st in self.state:
            st["layer"].__dict__.pop("update", None)
            st["layer"].keys = st["layer"].values = None
            st.clear()
        self.state = []

    def select(self, rows: torch.Tensor) -> None:
        """Keep only ``rows``: copy their live tokens into new buffers (same token capacity,
        fewer rows), so the dropped rows' memory is freed."""
        for st in self.state:
            for name in ("k", "v"):
                buf = st[name]
                fresh = buf.new_empty(len(rows), *buf.shape[1:])
                fresh[:, :, : st["len"]] = buf[rows, :, : st["len"]]
                st[name] = fresh
            self._publish(st)


def eos_ids(model, tokenizer) -> list[int]:
    """All token ids that end a completion (tokenizer EOS plus the generation config's)."""
    ids = {tokenizer.eos_token_id}
    gen = getattr(model, "generation_config", None)
    extra = getattr(gen, "eos_token_id", None) if gen is not None else None
    ids.update(extra if isinstance(extra, list) else [extra])
    return sorted(i for i in ids if i is not None)


def kv_bytes_per_token(model) -> int:  # pragma: no mutate block
    """Bytes of KV cache one sequence needs per token (all layers, keys and values)."""
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    layers = cfg.num_hidden_layers
    heads = cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    return 2 * layers * kv_heads * head_dim * next(model.parameters()).element_size()


def auto_batch_rows(model, max_len: int, device: torch.device, fraction: float = 0.5,
                    cpu_cap: int = 1024) -> int:  # pragma: no mutate block
    """Rows (sequences) per batch that fit ``fraction`` of free memory: KV cache for
    ``max_len`` tokens plus ~3 float32 vocab-sized buffers per row for the sampling step.
    On CPU, batches beyond ~1k rows only fall out of cache (measured: 512 rows ran 1.4×
    faster than 4096 for the tiny GPT-2), hence ``cpu_cap``."""
    vocab = model.config.get_text_config().vocab_size if hasattr(model.config, "get_text_config") else model.config.vocab_size
    per_row = kv_bytes_per_token(model) * max_len + 3 * 4 * vocab
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return max(1, int(free * fraction // per_row))
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        free = 4 << 30
    return max(1, min(cpu_cap, int(free * fraction // per_row)))


def nucleus_logprobs(logits: torch.Tensor, decoding: Decoding) -> torch.Tensor:
    """Temperature-scaled log-probabilities (..., V) with the tokens outside the top-p nucleus
    set to −inf (not renormalised): exactly what :func:`next_tokens` draws from, so
    ``leakk.stats.bounds`` computes the sampler's own distribution, not a re-implementation."""
    # one pass fewer each where exact: x / 1.0 == x, and log_softmax upcasts half-precision logits
    # itself (the vocabulary-sized fp32 passes are much of a decoding step's memory traffic)
    scaled = logits if decoding.temperature == 1 else logits.float() / decoding.temperature
    logp = torch.log_softmax(scaled, dim=-1, dtype=torch.float32)
    if decoding.top_p < 1.0:
        sorted_lp, order = logp.sort(dim=-1, descending=True)
        probs = sorted_lp.exp()
        drop_sorted = (probs.cumsum(-1) - probs) >= decoding.top_p  # mass of more likely tokens
        drop = torch.zeros_like(drop_sorted).scatter_(-1, order, drop_sorted)
        logp = logp.masked_fill(drop, float("-inf"))
    return logp


def next_tokens(logits: torch.Tensor, decoding: Decoding, keys: torch.Tensor, step: int) -> torch.Tensor:
    """Pick one token per row of ``logits`` (B, V); ``keys`` (B,) are the rows' random keys.

    Greedy takes the argmax. Sampling applies temperature, then top-p (the smallest set of
    most likely tokens whose mass reaches ``top_p``, as HF's TopPLogitsWarper), then draws
    exactly from the result by a two-level Gumbel-max: a block of ~√V tokens by Gumbel-max
    over the blocks' log-masses, then a token within it by Gumbel-max. Gumbel-max is robust
    to the tiny logit differences between batch shapes (an inverse-CDF draw over 128k
    near-flat probabilities is not), and two levels need ~2√V counter-based draws per row
    instead of V.
    """
    if decoding.greedy:
        return logits.argmax(-1)
    logp = nucleus_logprobs(logits, decoding)
    rows, vocab = logp.shape
    block = max(1, math.isqrt(vocab - 1) + 1)
    blocks, full = -(-vocab // block), vocab // block
    # block log-masses; a last, partial block is reduced on its own (as if padded with −inf,
    # without copying the vocabulary-sized tensor to pad it)
    mass = torch.logsumexp(logp[:, : full * block].view(rows, full, block), -1)
    if full < blocks:
        mass = torch.cat([mass, torch.logsumexp(logp[:, full * block:], -1, keepdim=True)], dim=1)
    arange_b = torch.arange(blocks, device=logits.device).expand(rows, -1)
    chosen = (mass + gumbel(keys, step, 0, arange_b)).argmax(-1)
    token_ids = chosen.unsqueeze(-1) * block + torch.arange(block, device=logits.device)
    within = logp.gather(1, token_ids.clamp(max=vocab - 1)).masked_fill(token_ids >= vocab, float("-inf"))
    return chosen * block + (within + gumbel(keys, step, 1, token_ids)).argmax(-1)


def _plan_batches(lengths: list[int], n: int, max_rows: int) -> list[list[tuple[int, int, int]]]:
    """Split (question, sample range) work into batches of ≤ max_rows rows.

    Returns batches of units (question index, first sample_idx, count); questions are taken
    in descending prompt length so each batch pads little.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    units = [(q, s, min(max_rows, n - s)) for q in order for s in range(0, n, max_rows)]
    batches, cur, rows = [], [], 0
    for unit in units:
        if rows + unit[2] > max_rows and cur:
            batches.append(cur)
            cur, rows = [], 0
        cur.append(unit)
        rows += unit[2]
    if cur:
        batches.append(cur)
    return batches


@torch.inference_mode()
def _run_batch(model, prompts: list[list[int]], units, qids: list[str], decoding: Decoding,
               max_new_tokens: int, seed: int, pad_id: int, stop_ids: torch.Tensor,
               device: torch.device) -> list[Completion]:
    uq = sorted({q for q, _, _ in units})
    local = {q: i for i, q in enumerate(uq)}
    width = max(len(prompts[q]) for q in uq)
    input_ids = torch.full((len(uq), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(uq), width), dtype=torch.long)
    for i, q in enumerate(uq):
        input_ids[i, width - len(prompts[q]):] = torch.tensor(prompts[q])
        mask[i, width - len(prompts[q]):] = 1
    input_ids, mask = input_ids.to(device), mask.to(device)
    out = model(input_ids=input_ids, attention_mask=mask,
                position_ids=(mask.cumsum(-1) - 1).clamp(min=0), use_cache=True)
    cache, cache_arg = _cache_of(out), _cache_arg(model)

    # expand each prompt's prefill to its samples: row r belongs to question src[r]
    src = np.concatenate([np.full(c, local[q]) for q, _, c in units])
    sample_idx = np.concatenate([np.arange(s, s + c) for _, s, c in units])
    row_qids = [qids[uq[i]] for i in src]
    src_t = torch.as_tensor(src, device=device)
    reason = PreallocatedKV.unsupported(cache) if PREALLOCATE else "preallocation is off"
    if reason is None:
        kv = PreallocatedKV(cache, max_new_tokens, rows=src_t)
    else:
        if PREALLOCATE:
            _fallback(reason)
        kv = None
        cache.batch_select_indices(src_t)
    logits = out.logits[:, -1].index_select(0, src_t)
    mask = mask.index_select(0, src_t)
    keys = keys_tensor(row_keys(seed, row_qids, sample_idx), device)

    rows = len(src)
    tokens = torch.full((rows, max_new_tokens), pad_id, dtype=torch.long, device=device)
    length = torch.full((rows,), max_new_tokens, dtype=torch.long, device=device)
    stopped = torch.zeros(rows, dtype=torch.bool, device=device)
    alive = torch.arange(rows, device=device)  # global row id of each batch row
    pending = torch.zeros(rows, dtype=torch.bool, device=device)  # finished, not yet dropped
    for t in range(max_new_tokens):
        tok = next_tokens(logits, decoding, keys[alive], t)
        live = ~pending
        tokens[alive[live], t] = tok[live]
        done = live & torch.isin(tok, stop_ids)
        if done.any():
            length[alive[done]] = t + 1
            stopped[alive[done]] = True
            pending |= done
        if t == max_new_tokens - 1 or bool(pending.all()):
            break
        if pending.sum() >= COMPACT_FRACTION * len(alive):
            keep = (~pending).nonzero().squeeze(-1)
            if kv is not None:
                kv.select(keep)
            else:
                cache.batch_select_indices(keep)
            alive, tok, mask = alive[keep], tok[keep], mask[keep]
            pending = torch.zeros(len(alive), dtype=torch.bool, device=device)
        mask = torch.cat([mask, mask.new_ones((len(alive), 1))], dim=1)
        out = model(input_ids=tok.unsqueeze(-1), attention_mask=mask,
                    position_ids=mask.sum(-1, keepdim=True) - 1, use_cache=True, **{cache_arg: cache})
        cache = _cache_of(out)
        logits = out.logits[:, -1]
        if kv is not None and not kv.intact():
            # the model did not grow the cache through layer.update: its cache holds the
            # right tensors (grown from the views), so continue with it, never with stale buffers
            _fallback("the model bypassed the cache layers' update")
            kv = None

    if kv is not None:
        kv.release()
    tokens, length, stopped = tokens.cpu(), length.cpu().tolist(), stopped.cpu().tolist()
    return [
        Completion(row_qids[r], int(sample_idx[r]), tokens[r, : length[r]].tolist(),
                   "stop" if stopped[r] else "length")
        for r in range(rows)
    ]


def sample_hf(model, tokenizer, qids: list[str], prompts: list[list[int]], decoding: Decoding,
              n: int, max_new_tokens: int, seed: int, batch_rows: int | str = "auto",
              progress: bool = True, desc: str = "sample") -> list[Completion]:
    """``n`` completions of each prompt (a :class:`~leakk.sampling.backend.SamplingRequest`
    makes that 1 for greedy); ``prompts`` are token-id lists."""
    if not prompts:  # an empty shard
        return []
    device = next(model.parameters()).device
    if batch_rows == "auto":
        batch_rows = auto_batch_rows(model, max(map(len, prompts)) + max_new_tokens, device)
    batches = _plan_batches([len(p) for p in prompts], n, int(batch_rows))
    stop = torch.tensor(eos_ids(model, tokenizer), device=device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop[0].item()
    model.eval()
    results: list[Completion] = []
    with tqdm(total=len(prompts) * n, desc=desc, unit="sample", disable=not progress) as bar, \
            grouped_decoding(model):
        for units in batches:
            results += _run_batch(model, prompts, units, qids, decoding, max_new_tokens, seed,
                                  pad, stop, device)
            bar.update(sum(c for _, _, c in units))
    return results
