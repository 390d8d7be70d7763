"""int64 fixed point and the exactly reversible multiplication by n/d, in torch (see backends/fixed_point.py)."""
from __future__ import annotations

import torch

from ..fixed_point import VALUE_BITS

_LIMIT = 2**VALUE_BITS


def quantize(y: torch.Tensor, frac_bits: int, coef: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """round(coef y 2**frac_bits) as int64, and a 0-dim bool tensor: some value is out of range or NaN.

    Args:
        y: float tensor, any shape.
        frac_bits: fractional bits of the format.
        coef: a factor applied in the same multiplication (the forward and the backward use this one function).

    Returns:
        (int64 tensor of y's shape, 0-dim bool: some |y| >= 2**(61 - frac_bits) or not finite).
    """
    s = y * (coef * 2.0**frac_bits)
    bad = ~(s.abs() < float(_LIMIT))
    return torch.round(s).to(torch.int64), bad.any()


def dequantize(q: torch.Tensor, frac_bits: int, dtype: torch.dtype) -> torch.Tensor:
    """The float value of a fixed-point tensor (the conversion rounds to nearest, deterministically)."""
    return q.to(dtype) * (2.0**-frac_bits)


def out_of_range(q: torch.Tensor) -> torch.Tensor:
    """0-dim bool: some |q| >= 2**61 (beyond it a sum of two values could wrap an int64)."""
    return (q.abs() >= _LIMIT).any()


def mul_ratio(c: torch.Tensor, i: torch.Tensor, n: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """c n / d rounded with a digit of the buffer, and the buffer word with the remainder pushed.

    Args:
        c: int64 values; i: int64 buffer word of the same shape (>= 0).
        n, d: gamma = n/d, 0 < n < d.

    Returns:
        (floor((c n + (i mod n)) / d), (i div n) d + remainder): a bijection on (c, i).

    References: thesis appendix 4.C (information buffer), backends/fixed_point.py (the order).
    """
    u, i = torch.remainder(i, n), torch.div(i, n, rounding_mode="floor")
    a, b = torch.div(c, d, rounding_mode="floor"), torch.remainder(c, d)
    q = b * n + u
    c = a * n + torch.div(q, d, rounding_mode="floor")
    return c, i * d + torch.remainder(q, d)


def div_ratio(c: torch.Tensor, i: torch.Tensor, n: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact inverse of :func:`mul_ratio`: the (c, i) it was given."""
    r, i = torch.remainder(i, d), torch.div(i, d, rounding_mode="floor")
    a, b = torch.div(c, n, rounding_mode="floor"), torch.remainder(c, n)
    p = b * d + r
    c = a * d + torch.div(p, n, rounding_mode="floor")
    return c, i * n + torch.remainder(p, n)
