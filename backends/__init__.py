"""Framework backends (torch, jax) behind one interface; each loads only on first use."""

from __future__ import annotations

import importlib

from harness.registry import Registry

from ._protocol import DEVICE_KINDS, Backend, DeviceUnavailable, timer

REGISTRY: Registry[Backend] = Registry("backend")
REGISTRY.register("torch", lambda: importlib.import_module("backends.torch").BACKEND)
REGISTRY.register("jax", lambda: importlib.import_module("backends.jax").BACKEND)


def get(name: str) -> Backend:
    """The backend registered as ``name`` (imports its framework on first call)."""
    return REGISTRY.get(name)


def names() -> list[str]:
    """Registered backend names."""
    return REGISTRY.names()


__all__ = ["DEVICE_KINDS", "REGISTRY", "Backend", "DeviceUnavailable", "get", "names", "timer"]
