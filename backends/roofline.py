"""The roofline operators (matmul, copy): their signatures, shared by backends/torch and backends/jax."""

from __future__ import annotations

from typing import Protocol

from core.backend import Array


class Matmul(Protocol):
    def __call__(self, a: Array, b: Array) -> Array: ...


class Copy(Protocol):
    def __call__(self, x: Array) -> Array: ...


OPS: dict[str, type] = {
    "matmul": Matmul,
    "copy": Copy,
}
"""Operator name -> its Protocol: ``backends.torch.<family>`` and ``backends.jax.<family>`` export each name."""
