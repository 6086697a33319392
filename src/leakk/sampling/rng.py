"""Counter-based random numbers: every draw is a hash of (seed, qid, sample_idx, step, index).

A completion's random stream therefore depends only on (seed, qid, sample_idx), never on
batch size, batch composition, device or sharding, so S shards reproduce the S = 1 run row
for row (up to floating-point near-ties between batch shapes). The hash is SplitMix64's
finaliser; numpy computes the per-row keys, torch the per-step noise on the device.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

_GOLDEN = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB
_MASK = (1 << 64) - 1


def _mix_np(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on uint64 (multiplication wraps modulo 2^64 by design)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(_M1)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(_M2)
        return x ^ (x >> np.uint64(31))


def qid_key(qid: str) -> int:
    """A stable 64-bit key for a question id (Python's ``hash`` is salted per process)."""
    return int.from_bytes(hashlib.blake2b(qid.encode(), digest_size=8).digest(), "little")


def row_keys(seed: int, qids: list[str], sample_idx: np.ndarray) -> np.ndarray:
    """One uint64 key per completion from (seed, qid, sample_idx)."""
    q = np.array([qid_key(x) for x in qids], dtype=np.uint64)
    with np.errstate(over="ignore"):
        k = _mix_np(q ^ _mix_np(np.uint64((seed + _GOLDEN) & _MASK)))
        return _mix_np(k + np.asarray(sample_idx, dtype=np.uint64) * np.uint64(_GOLDEN))


def _signed(c: int) -> int:
    """A uint64 constant as the int64 with the same bits (torch has no uint64 arithmetic)."""
    return c - (1 << 64) if c >= 1 << 63 else c


def _srl(x: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 bits (torch's ``>>`` is arithmetic on signed ints)."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def _mix_t(x: torch.Tensor) -> torch.Tensor:
    """SplitMix64 finaliser on int64 tensors, bit-identical to :func:`_mix_np`."""
    x = (x ^ _srl(x, 30)) * _signed(_M1)
    x = (x ^ _srl(x, 27)) * _signed(_M2)
    return x ^ _srl(x, 31)


def keys_tensor(keys: np.ndarray, device) -> torch.Tensor:
    """uint64 row keys → an int64 tensor with the same bits."""
    return torch.from_numpy(np.ascontiguousarray(keys).view(np.int64)).to(device)


def gumbel(keys: torch.Tensor, step: int, stream: int, index: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel noise G[r, j] for row keys ``keys`` (B,) at ``step``, for each
    ``index`` (B, M) within ``stream`` (so two uses in one step never share draws)."""
    counter = (step * 0x10001 + stream) * 0x1000003  # distinct per (step, stream)
    x = _mix_t(keys.unsqueeze(-1) + _signed((counter * _GOLDEN) & _MASK) + index * _signed(_M2))
    # 23 random bits: (m + 0.5)·2⁻²³ is exact in float32 and strictly inside (0, 1), so the
    # noise is always finite (with 24 bits the top value rounds to 1.0 and gives +inf)
    u = (_srl(x, 41).float() + 0.5) * (1.0 / (1 << 23))
    return -torch.log(-torch.log(u))


