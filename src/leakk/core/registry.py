"""One registry pattern for benchmarks, unlearning methods, judges and sampling backends.

A module registers its class (or function) with a decorator built from
:meth:`Registry.register`, and the package's ``__init__`` imports the module; a name that is
not registered fails with the same one-line :class:`~leakk.core.errors.ParamsError` everywhere::

    <params key>: unknown <kind> 'x' (known: ['a', 'b'])

A registry may also know *lazy* entries (name → module): the module is imported on first
use, so an optional heavy dependency (vLLM) costs nothing until it is asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

from leakk.core.errors import ParamsError

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """Names → registered objects of one ``kind`` (``"judge"``, ``"method"``, …).

    ``key`` is the params key that names an entry (for the error message); ``lazy`` maps
    names to modules that register them when imported.
    """

    def __init__(self, kind: str, key: str, lazy: Mapping[str, str] | None = None) -> None:
        self.kind = kind
        self.key = key
        self._entries: dict[str, T] = {}
        self._lazy = dict(lazy or {})

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register the decorated object under ``name`` (a class also gets
        ``cls.name = name``). Registering a different object twice is a programming error."""

        def deco(obj: T) -> T:
            old = self._entries.get(name)
            if old is not None and old is not obj and getattr(old, "__qualname__", None) != getattr(
                    obj, "__qualname__", object()):
                raise ValueError(f"{self.kind} {name!r} is already registered ({old!r})")
            if isinstance(obj, type):
                obj.name = name  # type: ignore[attr-defined]
            self._entries[name] = obj
            return obj

        return deco

    def names(self) -> list[str]:
        """Every known name (lazy ones included), sorted."""
        return sorted({*self._entries, *self._lazy})

    def unknown(self, name: object, key: str | None = None) -> ParamsError:
        """The error for an unknown ``name`` under params key ``key``."""
        return ParamsError(f"{key or self.key}: unknown {self.kind} {name!r} (known: {self.names()})")

    def get(self, name: str, key: str | None = None) -> T:  # type: ignore[override]
        """The object registered as ``name``; ``ParamsError`` naming ``key`` if unknown."""
        if name not in self._entries and name in self._lazy:
            importlib.import_module(self._lazy[name])
        if name not in self._entries:
            raise self.unknown(name, key)
        return self._entries[name]

    def pop(self, name: str, default: T | None = None) -> T | None:
        """Unregister ``name`` (tests register throwaway entries)."""
        return self._entries.pop(name, default)

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._lazy

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
