"""Workload modules, one per thesis experiment; ``core.registry.WORKLOADS`` loads them lazily by name.

Third-party workloads register through the entry-point group ``deeperbench.workloads``
(``name = "package.module"``).
"""

from __future__ import annotations

import importlib
import pkgutil
from importlib.metadata import entry_points

from core.registry import WORKLOADS
from core.workload import Workload, validate_module

BUILTIN = {m.name: f"{__name__}.{m.name}" for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")}
"""Every module of this package is a built-in workload, registered under its module name (a new one needs no edit here)."""

REGISTRY = WORKLOADS
"""The registry other packages ask by name (``core.registry.WORKLOADS``); importing this package fills it."""


def _loader(module_name: str):
    def load() -> Workload:
        return validate_module(importlib.import_module(module_name))

    return load


for _name, _module in BUILTIN.items():
    REGISTRY.register(_name, _loader(_module))
for _ep in entry_points(group="deeperbench.workloads"):
    REGISTRY.register(_ep.name, _loader(_ep.value))


def get(name: str) -> Workload:
    """The workload module registered as ``name``."""
    return REGISTRY.get(name)


def names() -> list[str]:
    """All registered workload names."""
    return REGISTRY.names()


__all__ = ["REGISTRY", "get", "names"]
