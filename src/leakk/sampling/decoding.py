"""Decoding settings and their canonical names (``greedy``, ``t1.0_p1.0``, …)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Decoding:
    """temperature = 0 means greedy (one sample per question)."""

    temperature: float
    top_p: float = 1.0

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def name(self) -> str:
        return "greedy" if self.greedy else f"t{float(self.temperature)}_p{float(self.top_p)}"

    @classmethod
    def from_name(cls, name: str) -> "Decoding":
        if name == "greedy":
            return cls(0.0, 1.0)
        t, p = name.split("_")
        return cls(float(t[1:]), float(p[1:]))


GREEDY = Decoding(0.0, 1.0)


def decoding_names(p: dict[str, Any]) -> list[str]:
    """``greedy`` plus each sampled decoding's canonical name."""
    return ["greedy", *(Decoding(d["temperature"], d["top_p"]).name for d in p["sample"]["decodings"])]
