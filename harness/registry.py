"""Name registries for workloads, backends and executors: unique names, helpful lookup errors."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


def did_you_mean(name: str, known: list[str]) -> str:
    """Return ``"; did you mean 'x'?"`` for the closest known name, or an empty string."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


class Registry(Generic[T]):
    """A mapping from unique names to lazily loaded objects.

    An entry is either the object itself or a zero-argument loader called on first lookup, so
    that registering a backend or workload never imports torch or jax.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._loaders: dict[str, Callable[[], T]] = {}
        self._loaded: dict[str, T] = {}

    def register(self, name: str, loader: Callable[[], T]) -> None:
        """Register ``loader`` under ``name``; a second registration of a name raises."""
        if name in self._loaders:
            raise ValueError(f"{self.kind} '{name}' is already registered")
        self._loaders[name] = loader

    def get(self, name: str) -> T:
        """Return the object registered as ``name``, loading it on first use."""
        if name not in self._loaders:
            known = self.names()
            raise KeyError(f"unknown {self.kind} '{name}'; known: {', '.join(known)}{did_you_mean(name, known)}")
        if name not in self._loaded:
            self._loaded[name] = self._loaders[name]()
        return self._loaded[name]

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._loaders)

    def __contains__(self, name: object) -> bool:
        return name in self._loaders

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
