"""int64 fixed point and the exactly reversible multiplication by n/d, in torch (see backends/fixed_point.py)."""

from __future__ import annotations

import torch

from ..fixed_point import VALUE_BITS

_LIMIT = 2**VALUE_BITS


def quantize(y: torch.Tensor, frac_bits: int, coef: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """round(coef y 2**frac_bits) as int64 (``backends/fixed_point.py``'s format), and a 0-dim bool tensor: some |y| >=
    2**(61 - frac_bits) or not finite. ``coef`` is applied in the same multiplication (forward and backward share it).
    """
    s = y * (coef * 2.0**frac_bits)
    low, high = torch.aminmax(s)
    bad = ~((low > -float(_LIMIT)) & (high < float(_LIMIT)))  # NaN compares false: flagged too
    return torch.round_(s).to(torch.int64), bad


def dequantize(q: torch.Tensor, frac_bits: int, dtype: torch.dtype) -> torch.Tensor:
    """The float value of a fixed-point tensor (the conversion rounds to nearest, deterministically)."""
    return q.to(dtype) * (2.0**-frac_bits)


def out_of_range(q: torch.Tensor) -> torch.Tensor:
    """0-dim bool: some |q| >= 2**61 (beyond it a sum of two values could wrap an int64)."""
    low, high = torch.aminmax(q)
    return (low <= -_LIMIT) | (high >= _LIMIT)


def mul_ratio(c: torch.Tensor, i: torch.Tensor, n: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The buffered multiplication of (c, i) by n/d (``backends/fixed_point.py``'s step) on int64 tensors."""
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


def scratch(like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two int64 work tensors for :func:`mul_ratio_` and :func:`div_ratio_` (allocated once per pass)."""
    return torch.empty_like(like), torch.empty_like(like)


def mul_ratio_(c: torch.Tensor, i: torch.Tensor, n: int, d: int, work: tuple[torch.Tensor, torch.Tensor]) -> None:
    """:func:`mul_ratio` in place on ``c`` and the buffer word ``i`` (a view into the buffer), no allocation."""
    s1, s2 = work
    torch.remainder(i, n, out=s1)  # u
    i.div_(n, rounding_mode="floor")
    torch.remainder(c, d, out=s2)  # b
    c.div_(d, rounding_mode="floor").mul_(n)  # a n
    s2.mul_(n).add_(s1)  # q = b n + u
    c.add_(torch.div(s2, d, rounding_mode="floor", out=s1))
    i.mul_(d).add_(s2.remainder_(d))


def div_ratio_(c: torch.Tensor, i: torch.Tensor, n: int, d: int, work: tuple[torch.Tensor, torch.Tensor]) -> None:
    """:func:`div_ratio` in place on ``c`` and the buffer word ``i``, no allocation."""
    s1, s2 = work
    torch.remainder(i, d, out=s1)  # r
    i.div_(d, rounding_mode="floor")
    torch.remainder(c, n, out=s2)  # b'
    c.div_(n, rounding_mode="floor").mul_(d)  # a' d
    s2.mul_(d).add_(s1)  # p = b' d + r
    c.add_(torch.div(s2, n, rounding_mode="floor", out=s1))
    i.mul_(n).add_(s2.remainder_(n))
