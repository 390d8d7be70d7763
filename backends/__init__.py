"""Framework backends (torch, jax) behind one interface; each loads only on first use.

Importing this package registers the built-in backends and the ``deeperbench.backends`` entry points
(``name = "package.module:OBJECT"`` or ``"package.module"`` exposing ``BACKEND``) into
``core.registry.BACKENDS``, which other packages ask by name.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from core.backend import DEVICE_KINDS, Array, Backend, DeviceUnavailable, Memory, timer
from core.registry import BACKENDS

BUILTIN = {"torch": "backends.torch", "jax": "backends.jax"}

REGISTRY = BACKENDS


def _loader(target: str):
    module_name, _, attribute = target.partition(":")

    def load() -> Backend:
        return getattr(importlib.import_module(module_name), attribute or "BACKEND")

    return load


for _name, _module in BUILTIN.items():
    REGISTRY.register(_name, _loader(_module))
for _ep in entry_points(group="deeperbench.backends"):
    REGISTRY.register(_ep.name, _loader(_ep.value))


def get(name: str) -> Backend:
    """The backend registered as ``name`` (imports its framework on first call)."""
    return REGISTRY.get(name)


def names() -> list[str]:
    """Registered backend names."""
    return REGISTRY.names()


__all__ = ["DEVICE_KINDS", "REGISTRY", "Array", "Backend", "DeviceUnavailable", "Memory", "get", "names", "timer"]
