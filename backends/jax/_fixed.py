"""int64 fixed point and the exactly reversible multiplication by n/d, in JAX (see backends/fixed_point.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..fixed_point import VALUE_BITS

_LIMIT = 2**VALUE_BITS


def quantize(y: jax.Array, frac_bits: int, coef: float = 1.0) -> tuple[jax.Array, jax.Array]:
    """round(coef y 2**frac_bits) as int64 (``backends/fixed_point.py``'s format), and a bool scalar: some |y| >=
    2**(61 - frac_bits) or not finite. ``coef`` is applied in the same multiplication (forward and backward share it).
    """
    s = y * (coef * 2.0**frac_bits)
    bad = jnp.any(~(jnp.abs(s) < float(_LIMIT)))
    return jnp.round(s).astype(jnp.int64), bad


def dequantize(q: jax.Array, frac_bits: int, dtype: str) -> jax.Array:
    """The float value of a fixed-point array (the conversion rounds to nearest, deterministically)."""
    return q.astype(dtype) * (2.0**-frac_bits)


def out_of_range(q: jax.Array) -> jax.Array:
    """bool scalar: some |q| >= 2**61 (beyond it a sum of two values could wrap an int64)."""
    return jnp.any(jnp.abs(q) >= _LIMIT)


def mul_ratio(c: jax.Array, i: jax.Array, n: int, d: int) -> tuple[jax.Array, jax.Array]:
    """The buffered multiplication of (c, i) by n/d (``backends/fixed_point.py``'s step) on int64 arrays."""
    u, i = i % n, i // n
    a, b = c // d, c % d
    q = b * n + u
    return a * n + q // d, i * d + q % d


def div_ratio(c: jax.Array, i: jax.Array, n: int, d: int) -> tuple[jax.Array, jax.Array]:
    """The exact inverse of :func:`mul_ratio`: the (c, i) it was given."""
    r, i = i % d, i // d
    a, b = c // n, c % n
    p = b * d + r
    return a * d + p // n, i * n + p % n
