"""Residual functions f(x, theta_k) for the memory issue's networks, and parameter-set access."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from backends.resnets import ResidualConfig, block_shapes

_ACT = {"tanh": jnp.tanh, "relu": jax.nn.relu, "gelu": lambda a: jax.nn.gelu(a, approximate=False)}

Set = tuple[jax.Array, ...]
"""The parameter tensors of one residual function, in the order of ``block_shapes``."""


def mlp_block(ps: Sequence[jax.Array], x: jax.Array, activation: str) -> jax.Array:
    """The ``mlp`` block of ``backends.resnets.block_shapes``: (batch, width) -> (batch, width)."""
    w1, b1, w2, b2 = ps
    h = _ACT[activation](x @ w1.T + jnp.expand_dims(b1, 0))
    return h @ w2.T + jnp.expand_dims(b2, 0)


def batch_norm(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    """Norm over (batch, H, W) per channel with the batch's statistics, affine ``w``, ``b``; no running averages."""
    mean = jnp.mean(x, axis=(0, 2, 3), keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=(0, 2, 3), keepdims=True)
    scale = jnp.reshape(w, (1, -1, 1, 1)) * lax.rsqrt(var + 1e-5)
    return (x - mean) * scale + jnp.reshape(b, (1, -1, 1, 1))


def _conv(x: jax.Array, w: jax.Array) -> jax.Array:
    return lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NCHW", "OIHW", "NCHW"))


def conv_block(ps: Sequence[jax.Array], x: jax.Array, activation: str) -> jax.Array:
    """The ``conv`` / ``conv_norm`` block of ``backends.resnets.block_shapes``: (batch, width, size, size) -> same."""
    g1, b1, c1, g2, b2, c2, *last = ps
    act = _ACT[activation]
    h = _conv(act(batch_norm(x, g1, b1)), c1)
    h = _conv(act(batch_norm(h, g2, b2)), c2)
    return batch_norm(h, *last) if last else h


def call(cfg: ResidualConfig, ps: Set, x: jax.Array) -> jax.Array:
    """f(x, theta) for one parameter set ``ps`` of the config's block."""
    return (mlp_block if cfg.block == "mlp" else conv_block)(ps, x, cfg.activation)


def family(cfg: ResidualConfig, params: dict[str, jax.Array], name: str = "") -> Set:
    """The (stacked, unless tied) tensors of family ``name`` ("", "phi" or "psi"), in block order."""
    return tuple(params[f"{name}.{k}" if name else k] for k in block_shapes(cfg))


def take(cfg: ResidualConfig, ps: Set, k: Any) -> Set:
    """Parameter set k (a traced index is fine) of a family; the family itself when tied."""
    if cfg.tied:
        return ps
    return tuple(lax.dynamic_index_in_dim(p, k, 0, keepdims=False) for p in ps)


def add_at(cfg: ResidualConfig, acc: Set, k: Any, g: Set) -> Set:
    """Add the gradient of set k into the accumulators (in place under jit; summed when tied)."""
    if cfg.tied:
        return tuple(a + b for a, b in zip(acc, g))
    return tuple(
        lax.dynamic_update_index_in_dim(a, lax.dynamic_index_in_dim(a, k, 0, keepdims=False) + b, k, 0)
        for a, b in zip(acc, g)
    )


def add_pair_at(cfg: ResidualConfig, acc: Set, k: Any, g0: Set, g1: Set) -> Set:
    """Add the gradients of sets k and k + 1 with one in-place window update (Heun's step uses both)."""
    if cfg.tied:
        return tuple(a + b + c for a, b, c in zip(acc, g0, g1))
    return tuple(
        lax.dynamic_update_slice_in_dim(a, lax.dynamic_slice_in_dim(a, k, 2, 0) + jnp.stack([b, c]), k, 0)
        for a, b, c in zip(acc, g0, g1)
    )


def keeper(count: int, x: jax.Array) -> jax.Array:
    """A buffer for ``count`` kept activations plus one slot where the others are written."""
    return jnp.zeros((count + 1, *x.shape), x.dtype)


def keep(out: jax.Array | None, n: Any, x: jax.Array, every: int) -> jax.Array | None:
    """Write x_n into slot n // every when every divides n, else into the spare last slot."""
    if out is None:
        return None
    count = out.shape[0] - 1
    slot = jnp.where(n % every == 0, n // every, count)
    return lax.dynamic_update_index_in_dim(out, x, slot, 0)
