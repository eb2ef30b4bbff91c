"""Name → object registries: plain dicts behind a decorator, one per kind.

Losses, methods, models and datasets each keep one ``Registry``. Looking up an unknown name
fails with the closest valid names, which is what a user who made a typo needs to see.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from distil.errors import UnknownNameError

T = TypeVar("T")


def closest(name: str, choices: list[str] | tuple[str, ...], n: int = 3) -> list[str]:
    """Return up to ``n`` entries of ``choices`` that look most like ``name``."""
    return difflib.get_close_matches(name, list(choices), n=n, cutoff=0.5)


def did_you_mean(name: str, choices: list[str] | tuple[str, ...]) -> str:
    """A short suffix for error messages: "; did you mean 'x'?" or the list of valid names."""
    matches = closest(name, choices)
    if matches:
        return "; did you mean " + " or ".join(repr(m) for m in matches) + "?"
    return "; valid names: " + ", ".join(sorted(choices))


class Registry(Generic[T]):
    """A named collection of objects of one kind, filled by the ``register`` decorator."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that files the decorated object under ``name``."""

        def decorate(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return decorate

    def get(self, name: str) -> T:
        """The object registered as ``name``; an ``UnknownNameError`` suggesting close names."""
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}{did_you_mean(name, self.names())}"
            ) from None

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        """(name, object) pairs sorted by name."""
        return sorted(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
