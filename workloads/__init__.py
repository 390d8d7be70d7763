"""Workload modules, one per thesis experiment; the registry loads them lazily by name.

Third-party workloads register through the entry-point group ``deeperbench.workloads``
(``name = "package.module"``).
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from harness.registry import Registry
from harness.workload import Workload, validate_module

BUILTIN = {
    "device_roofline": "workloads.device_roofline",
    "harness_probe": "workloads.harness_probe",
    "memory_depth": "workloads.memory_depth",
    "attention_stochasticity": "workloads.attention_stochasticity",
    "topk_runtime": "workloads.topk_runtime",
    "implicit_regularization": "workloads.implicit_regularization",
    "icl_autoregressive": "workloads.icl_autoregressive",
    "topk_pruning": "workloads.topk_pruning",
    "moe_precision": "workloads.moe_precision",
    "adjoint_error": "workloads.adjoint_error",
}

REGISTRY: Registry[Workload] = Registry("workload")


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
