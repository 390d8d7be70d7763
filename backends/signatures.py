"""The operator signatures both backends export in ``ops`` (STYLE.md rule 3): one Protocol each.

``tests/backends/test_signatures.py`` checks that ``backends.torch.ops`` and ``backends.jax.ops``
export every name listed here with the same parameters, order and defaults.
"""
from __future__ import annotations

from typing import Any, Protocol

Array = Any
"""A torch.Tensor or a jax.Array, depending on the backend."""


class Matmul(Protocol):
    def __call__(self, a: Array, b: Array) -> Array: ...


class Copy(Protocol):
    def __call__(self, x: Array) -> Array: ...


OPS: dict[str, type] = {
    "matmul": Matmul,
    "copy": Copy,
}
"""Operator name -> its Protocol; every backend's ``ops`` module exports each name."""
