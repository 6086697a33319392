"""Exceptions the CLI turns into one-line messages (no traceback) and a non-zero exit."""


class LeakkError(Exception):
    """Base class: an expected, user-facing failure."""


class ParamsError(LeakkError):
    """params.yaml breaks a rule; the message names the key and the rule."""

    def with_source(self, source: str) -> "ParamsError":
        """The same error, prefixed with the params file it comes from."""
        return ParamsError(f"{source}: {self}")


class ArtifactError(LeakkError):
    """An input artifact is missing or breaks its contract."""
