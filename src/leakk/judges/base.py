"""The judge interface and registry.

A judge maps completions (plus the reference answer, the question and, where known, the key
fact span) to a per-item ``score`` (float, NaN = the judge failed on that item) and a per-item
``leaked`` flag (``True``/``False``, or ``None`` = the judge failed; a failed judge is
never "not leaked").

Judges are always called on whole batches (``score_batch``), so a GPU judge (NLI,
embeddings) or a remote one (an OpenAI-compatible endpoint) can batch internally;
``batch_size`` says how many items the caller hands over per call (``None`` = everything
at once). Each judge is one module that registers itself with :func:`register_judge`; a
module whose judge needs a heavy dependency imports it inside the class, not at module
import time, so that ``import leakk.judges`` stays light.

Model-based judges take a ``device`` keyword (``auto``/``cpu``/``cuda[:N]``); the judge
stage passes the experiment's ``device`` unless the judge's own params name one. Every
judge class declares ``params_schema``: a JSON Schema of its constructor keywords with their
defaults and ranges — the only place a judge's default is written. ``judge.<label>`` is
validated against it and filled with its defaults once, when params are loaded (and by
:func:`make_judge` for code that builds a judge itself); constructors take those values as
they are. Two keys of ``judge.<label>`` are read by the judge stage, never by the judge:
``type`` (the registered judge name; default: the label) and ``max_missing`` (the largest
fraction of failed judgments the stage accepts).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar

import numpy as np

from leakk.core.errors import ParamsError
from leakk.core.registry import Registry
from leakk.core.schema import filled

__all__ = ["JUDGES", "Judge", "make_judge", "register_judge", "aligned_length", "STAGE_KEYS", "label_schema",
           "judge_params"]

#: Keys of ``judge.<label>`` read by the judge stage itself, not passed to the judge
#: (JSON Schema of each; merged into every judge's ``params_schema`` for validation).
STAGE_KEYS: dict[str, dict[str, Any]] = {
    "type": {"type": "string", "description": "registered judge name (default: the label)"},
    "max_missing": {
        "type": "number", "minimum": 0, "maximum": 1, "default": 0.05,
        "description": "the judge stage fails when more than this fraction of its judgments "
                       "failed (leaked null)",
    },
}


class Judge(abc.ABC):
    """Base class of every judge.

    Subclasses set ``name`` through :func:`register_judge`, declare their parameters in
    ``params_schema``, take them as keyword arguments in ``__init__`` (validated and
    defaults-filled already; no defaults of their own) and implement :meth:`score_batch`.
    """

    #: Registered name (set by :func:`register_judge`).
    name: ClassVar[str] = ""
    #: JSON Schema of the constructor's keyword parameters (``type`` and ``max_missing``
    #: excluded): params validation checks ``judge.<label>`` against it (plus STAGE_KEYS)
    #: before any work starts.
    params_schema: ClassVar[dict[str, Any]] = {"type": "object", "additionalProperties": False, "properties": {}}
    @classmethod
    def check_params(cls, params: dict[str, Any], where: str) -> None:
        """Rules the schema cannot state (raise ``ParamsError``); called after the schema check."""

    #: Whether the constructor takes ``device`` (the stage then passes params ``device``).
    uses_device: ClassVar[bool] = False
    #: Modules the judge imports beyond leakk's own dependencies (validation refuses the
    #: judge up front where one is not installed).
    requires: ClassVar[tuple[str, ...]] = ()
    #: Items handed to one ``score_batch`` call by :func:`leakk.judges.judge_samples`;
    #: ``None`` = all distinct items at once. A failing call fails its whole batch.
    batch_size: int | None = 4096

    @abc.abstractmethod
    def score_batch(
        self,
        completions: Sequence[str],
        references: Sequence[str],
        facts: Sequence[str | None],
        questions: Sequence[str | None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Judge aligned lists; return ``(scores, leaked)``.

        ``questions`` (the question each completion answers; ``None`` = unknown) is passed
        by :func:`leakk.judges.judge_samples`; judges that do not need it ignore it.

        ``scores``: float64 array, NaN where the judge failed on an item.
        ``leaked``: object array of ``True``/``False``/``None`` (``None`` = failed).
        Both have ``len(completions)`` entries, in input order.
        """

    def close(self) -> None:  # pragma: no cover - trivial default
        """Release resources (models, clients). Called once judging is done."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


#: Registered judge classes by name.
JUDGES: Registry[type[Judge]] = Registry("judge", "judge")

J = TypeVar("J", bound=type[Judge])


def register_judge(name: str) -> Callable[[J], J]:
    """Class decorator: register a :class:`Judge` subclass under ``name``."""

    def deco(cls: J) -> J:
        if not (isinstance(cls, type) and issubclass(cls, Judge)):
            raise TypeError(f"@register_judge({name!r}) needs a Judge subclass, got {cls!r}")
        return JUDGES.register(name)(cls)

    return deco


def judge_params(cls: type[Judge], params: dict[str, Any] | None, source: str, prefix: tuple = ()) -> dict[str, Any]:
    """``params`` checked against judge class ``cls``'s schema (and its :meth:`Judge.check_params`)
    and filled with its defaults."""
    out = filled(params, cls.params_schema, source, prefix)
    cls.check_params(out, f"{source}: {'.'.join(map(str, prefix))}" if prefix else source)
    return out


def make_judge(name: str, **params: Any) -> Judge:
    """Build the judge registered as ``name`` from ``params``, checked and defaults-filled by its
    schema (code that builds a judge itself; the pipeline's params were checked at load).

    Raises ``ParamsError`` for an unknown name (listing the known ones) or for parameters the
    judge does not accept.
    """
    cls = JUDGES.get(name)
    return construct(cls, judge_params(cls, params, f"judge {name!r}"))


def construct(cls: type[Judge], params: dict[str, Any]) -> Judge:
    """``cls(**params)``, a missing or unexpected keyword as one ``ParamsError`` line."""
    try:
        return cls(**params)
    except TypeError as exc:  # unexpected / missing keyword arguments
        raise ParamsError(f"judge {cls.name!r}: bad parameters {sorted(params)}: {exc}") from exc


def aligned_length(completions: Sequence[str], references: Sequence[str]) -> int:
    """The number of items, after checking that each completion has its reference (a judge
    called with misaligned lists must fail, never score item i against reference j)."""
    n = len(completions)
    if len(references) != n:
        raise ValueError(f"{n} completions but {len(references)} references")
    return n


def label_schema(cls: type[Judge]) -> dict[str, Any]:
    """The JSON Schema of a ``judge.<label>`` entry for judge class ``cls``, ``type`` excluded:
    the class's constructor keywords plus the keys the judge stage reads itself."""
    stage = {k: v for k, v in STAGE_KEYS.items() if k != "type"}
    return {**cls.params_schema, "properties": {**cls.params_schema.get("properties", {}), **stage}}
