"""The two calls that bound a device: a dense matmul (compute) and a copy (memory bandwidth)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


@jax.jit
def matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a @ b`` for a (m, k) and b (k, n): 2 m k n floating-point operations."""
    return a @ b


@jax.jit
def copy(x: jax.Array) -> jax.Array:
    """A fresh device-to-device copy of ``x``: reads and writes ``x.nbytes`` each."""
    return jnp.copy(x)
