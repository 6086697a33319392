"""Small shared pieces of the model-based judges: constructor checks and schema fragments."""

from __future__ import annotations

from typing import Any

from leakk.errors import ParamsError

#: JSON Schema fragments reused by the judges' ``params_schema``.
DEVICE_SCHEMA: dict[str, Any] = {
    "type": "string", "pattern": r"^(auto|cpu|mps|cuda(:\d+)?)$",
    "description": "torch device (default: the experiment's device)",
}
REVISION_SCHEMA: dict[str, Any] = {
    "type": ["string", "null"], "description": "hub revision (commit, tag or branch) to pin; null = default",
}


def check_str(judge: str, key: str, value: Any, *, nullable: bool = False) -> str | None:
    if value is None and nullable:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ParamsError(f"judge {judge!r}: {key} must be a non-empty string, got {value!r}")
    return value


def check_int(judge: str, key: str, value: Any, lo: int = 1, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi is not None and value > hi):
        rng = f"[{lo}, {hi}]" if hi is not None else f"≥ {lo}"
        raise ParamsError(f"judge {judge!r}: {key} must be an integer {rng}, got {value!r}")
    return value


def check_number(judge: str, key: str, value: Any, lo: float, hi: float) -> float:
    # (NaN fails the range test)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise ParamsError(f"judge {judge!r}: {key} must be a number in [{lo}, {hi}], got {value!r}")
    return float(value)


def check_device(judge: str, value: Any) -> str:
    import re

    if not isinstance(value, str) or not re.fullmatch(DEVICE_SCHEMA["pattern"], value):
        raise ParamsError(f"judge {judge!r}: device must be auto, cpu, mps or cuda[:N], got {value!r}")
    return value


def is_blank(text: str | None) -> bool:
    """An empty or whitespace-only completion (states nothing, so it cannot leak)."""
    return text is None or not text.strip()
