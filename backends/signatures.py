"""Every operator both backends export in ``ops``, gathered from the model families.

A family is a framework-neutral module ``backends/<family>.py`` beside ``backends/torch/<family>.py``
and ``backends/jax/<family>.py``; it declares ``OPS``, its operators' names and one Protocol each.
``tests/backends/test_signatures.py`` checks that ``backends.torch.ops`` and ``backends.jax.ops``
export every name with the same parameters, order and defaults as its Protocol.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

_ROOT = Path(__file__).resolve().parent


def families() -> list[str]:
    """The model families: neutral modules that both framework packages mirror, in name order."""
    return sorted(
        path.stem
        for path in _ROOT.glob("*.py")
        if not path.stem.startswith("_") and all((_ROOT / fw / path.name).exists() for fw in ("torch", "jax"))
    )


def _ops() -> dict[str, type]:
    ops: dict[str, type] = {}
    for family in families():
        for name, protocol in getattr(importlib.import_module(f"backends.{family}"), "OPS", {}).items():
            if name in ops:
                raise TypeError(f"operator {name!r} declared by two families (backends.{family} and another)")
            ops[name] = protocol
    return ops


OPS: dict[str, type] = _ops()
"""Operator name -> its Protocol; every backend's ``ops`` module exports each name."""


def collect(package: str) -> dict[str, Callable]:
    """The functions of ``OPS`` that the framework package ``package`` (``backends.torch``, ...) defines."""
    found: dict[str, Callable] = {}
    for family in families():
        module = importlib.import_module(f"{package}.{family}")
        found.update({name: getattr(module, name) for name in OPS if hasattr(module, name)})
    return found
