"""Small shared pieces of the model-based judges: schema fragments, the load-failure message and
the blank-completion verdicts they start from."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from leakk.core.errors import ParamsError

#: JSON Schema fragments reused by the judges' ``params_schema``.
DEVICE_SCHEMA: dict[str, Any] = {
    "type": "string", "pattern": r"^(auto|cpu|mps|cuda(:\d+)?)$",
    "description": "torch device (default: the experiment's device)",
}
REVISION_SCHEMA: dict[str, Any] = {
    "type": ["string", "null"], "default": None,
    "description": "hub revision (commit, tag or branch) to pin; null = default",
}


def load_error(judge: str, model_id: str, exc: Exception) -> ParamsError:
    """One line for a judge model that cannot be loaded (a wrong hub id, a missing folder): the
    first line of the loader's message, not its traceback."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ParamsError(f"judge {judge!r}: cannot load model {model_id!r}: {first}")


def is_blank(text: str | None) -> bool:
    """An empty or whitespace-only completion (states nothing, so it cannot leak)."""
    return text is None or not text.strip()


def blank_verdicts(completions: Sequence[str], references: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """``(scores, leaked, todo)`` for a model judge to fill in: every item starts as score 0,
    not leaked — final for a blank completion, which states nothing — and ``todo`` lists the
    items the model must judge (the lists are checked to be aligned)."""
    from leakk.judges.base import aligned_length

    n = aligned_length(completions, references)
    todo = [i for i, c in enumerate(completions) if not is_blank(c)]
    return np.zeros(n, dtype=np.float64), np.full(n, False, dtype=object), todo
