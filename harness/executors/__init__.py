"""Executors by name: ``ray`` (default; embedded or a cluster) and ``local`` (child processes, no Ray)."""

from __future__ import annotations

import importlib

from core.errors import UserError
from core.registry import Registry

from ._base import Executor, OnDone, Planner
from ._quiet import RayLog

REGISTRY: Registry[type] = Registry("executor")
REGISTRY.register("ray", lambda: importlib.import_module("harness.executors.ray_executor").RayExecutor)
REGISTRY.register("local", lambda: importlib.import_module("harness.executors.local").LocalExecutor)


def make(name: str, address: str | None = None, *, log: RayLog | None = None) -> Executor:
    """A new executor ``name``; ``address`` is the Ray cluster to join (ray only).

    ``log`` takes Ray's own output off the console (ray only; see ``RayLog``).
    """
    try:
        cls = REGISTRY.get(name)
    except KeyError as err:
        raise UserError(f"--executor: {err.args[0]}") from None
    return cls(address, log=log)


__all__ = ["REGISTRY", "Executor", "OnDone", "Planner", "RayLog", "make"]
