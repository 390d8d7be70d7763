"""Name registries for workloads, backends and executors: unique names, helpful lookup errors.

``WORKLOADS`` and ``BACKENDS`` are the two registries every package asks (``results`` included), so no
package imports ``workloads`` or ``backends`` to find one by name. Each is filled on first use by
importing its provider package by name (``workloads``, ``backends``), whose ``__init__`` registers the
built-ins and the third-party entry points of its group (``deeperbench.workloads``,
``deeperbench.backends``); registering never imports torch, jax or a workload module.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


def did_you_mean(name: str, known: list[str]) -> str:
    """Return ``"; did you mean 'x'?"`` for the closest known name, or an empty string."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


class Registry(Generic[T]):
    """A mapping from unique names to lazily loaded objects.

    An entry is either the object itself or a zero-argument loader called on first lookup, so
    that registering a backend or workload never imports torch or jax. With ``provider``, the
    package of that name is imported on the first lookup, and its import registers the entries.
    """

    def __init__(self, kind: str, provider: str | None = None) -> None:
        self.kind = kind
        self.provider = provider
        self._filled = provider is None
        self._loaders: dict[str, Callable[[], T]] = {}
        self._loaded: dict[str, T] = {}

    def _fill(self) -> None:
        if not self._filled and self.provider is not None:
            self._filled = True  # before the import, which registers into this registry
            importlib.import_module(self.provider)

    def register(self, name: str, loader: Callable[[], T]) -> None:
        """Register ``loader`` under ``name``; a second registration of a name raises."""
        if name in self._loaders:
            raise ValueError(f"{self.kind} '{name}' is already registered")
        self._loaders[name] = loader

    def get(self, name: str) -> T:
        """Return the object registered as ``name``, loading it on first use."""
        self._fill()
        if name not in self._loaders:
            known = self.names()
            raise KeyError(f"unknown {self.kind} '{name}'; known: {', '.join(known)}{did_you_mean(name, known)}")
        if name not in self._loaded:
            self._loaded[name] = self._loaders[name]()
        return self._loaded[name]

    def names(self) -> list[str]:
        """The registered names, sorted."""
        self._fill()
        return sorted(self._loaders)

    def __contains__(self, name: object) -> bool:
        self._fill()
        return name in self._loaders

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


WORKLOADS: Registry[Any] = Registry("workload", provider="workloads")
"""Every workload module by name: the built-ins of ``workloads`` and the ``deeperbench.workloads`` entry points."""

BACKENDS: Registry[Any] = Registry("backend", provider="backends")
"""Every framework backend by name: torch, jax and the ``deeperbench.backends`` entry points."""
