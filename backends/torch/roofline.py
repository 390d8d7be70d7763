"""The two calls that bound a device: a dense matmul (compute) and a copy (memory bandwidth)."""

from __future__ import annotations

import torch


def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for a (m, k) and b (k, n): 2 m k n floating-point operations."""
    return a @ b


def copy(x: torch.Tensor) -> torch.Tensor:
    """A fresh device-to-device copy of ``x``: reads and writes ``x.nbytes`` each."""
    return x.clone()
