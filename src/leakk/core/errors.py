"""Exceptions the CLI turns into one-line messages (no traceback) and a non-zero exit.

Any other exception a stage raises is also one line (:func:`unexpected_line`); ``LEAKK_DEBUG=1``
prints its traceback too.
"""

import os

#: set to 1 for the traceback of an unexpected error (the CLI and the Snakefile print one line)
DEBUG_ENV = "LEAKK_DEBUG"


def debug() -> bool:
    """Whether ``LEAKK_DEBUG`` asks for tracebacks."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "off", "no", "false")


def unexpected_line(exc: BaseException, where: str = "") -> str:
    """``<where>: <Type>: <first line of the message> (set LEAKK_DEBUG=1 for the traceback)``."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    if len(text) > 300:
        text = text[:300] + "…"
    return f"{where + ': ' if where else ''}{text} (set {DEBUG_ENV}=1 for the traceback)"


class LeakkError(Exception):
    """Base class: an expected, user-facing failure."""


class ParamsError(LeakkError):
    """params.yaml breaks a rule; the message names the key and the rule."""

    def with_source(self, source: str) -> "ParamsError":
        """The same error, prefixed with the params file it comes from."""
        return ParamsError(f"{source}: {self}")


class ArtifactError(LeakkError):
    """An input artifact is missing or breaks its contract."""
