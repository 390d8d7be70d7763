"""Blocked O(T)-memory Sinkhorn attention in pure JAX: the four passes and the custom VJP.

Each pass is a ``lax.fori_loop`` over key blocks of ``block`` keys (k is padded to a multiple of the block;
the padded keys are invalid), recomputing the (B, H, Tq, block) tile of S = s q k^T; ``row_lse`` keeps an
online log-sum-exp across blocks. The recursion is ``backends/sinkhorn_blocked.py``'s; ``jax.custom_vjp``
keeps only q, k, v, the output and the potentials of every iteration, all O(T).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from .. import sinkhorn_blocked as driver
from ..sinkhorn_blocked import DEFAULT_BLOCK, Primitives, Steps


def _fill(dtype) -> jax.Array:
    # Finite (not -inf): the log-sum-exp of an all-padded row stays finite; exp() of it is exactly 0.
    return jnp.asarray(jnp.finfo(dtype).min / 4, dtype)


class _Keys:
    """k (and everything indexed by keys) padded to ``nb`` blocks, with the validity of queries and keys."""

    def __init__(self, q: jax.Array, k: jax.Array, mask: jax.Array | None, block: int):
        self.t, self.block = k.shape[-2], block
        self.nb = -(-self.t // block)
        self.pad = self.nb * block - self.t
        self.k = self.keys(k, -2)
        key_ok = jnp.ones((1, 1, self.t), bool) if mask is None else mask
        self.key_ok = self.keys(key_ok)
        self.query_ok = None if mask is None else mask[..., :, None]
        self.scale = jnp.asarray(q.shape[-1] ** -0.5, q.dtype)

    def keys(self, x: jax.Array, axis: int = -1) -> jax.Array:
        """``x`` padded with zeros (False) to nb * block along its key ``axis``."""
        widths = [(0, 0)] * x.ndim
        widths[axis] = (0, self.pad)
        return jnp.pad(x, widths)

    def take(self, x: jax.Array, j, axis: int = -1) -> jax.Array:
        return jax.lax.dynamic_slice_in_dim(x, j * self.block, self.block, axis % x.ndim)

    def logits(self, q: jax.Array, a: jax.Array, b: jax.Array, j) -> jax.Array:
        """s q k_j^T + a_i + b_j on valid pairs of key block j, a large finite negative elsewhere."""
        s = (q @ jnp.swapaxes(self.take(self.k, j, -2), -1, -2)) * self.scale
        x = s + a[..., :, None] + self.take(b, j)[..., None, :]
        pair = self.take(self.key_ok, j)[..., None, :]
        if self.query_ok is not None:
            pair = jnp.logical_and(self.query_ok, pair)
        return jnp.where(pair, x, _fill(x.dtype))


def row_lse(q: jax.Array, k: jax.Array, g: jax.Array, mask: jax.Array | None, *, block: int) -> jax.Array:
    """r_i = LSE_j(s q_i.k_j + g_j) over valid j, online across key blocks: (B, H, Tq)."""
    keys = _Keys(q, k, mask, block)
    g, zero = keys.keys(g), jnp.zeros_like(q[..., 0])

    def body(j, carry):
        m, total = carry
        x = keys.logits(q, zero, g, j)
        new = jnp.maximum(m, x.max(-1))
        return new, total * jnp.exp(m - new) + jnp.exp(x - new[..., None]).sum(-1)

    m, total = jax.lax.fori_loop(0, keys.nb, body, (jnp.full_like(zero, _fill(zero.dtype)), zero))
    return m + jnp.log(total)


def col_lse(q: jax.Array, k: jax.Array, f: jax.Array, mask: jax.Array | None, *, block: int) -> jax.Array:
    """c_j = LSE_i(s q_i.k_j + f_i) over valid i, one key block at a time: (B, H, Tk)."""
    keys = _Keys(q, k, mask, block)
    zero = keys.keys(jnp.zeros_like(k[..., 0]))

    def body(j, out):
        c = jax.nn.logsumexp(keys.logits(q, f, zero, j), axis=-2)
        return jax.lax.dynamic_update_slice_in_dim(out, c, j * block, out.ndim - 1)

    return jax.lax.fori_loop(0, keys.nb, body, zero)[..., : keys.t]


def apply(
    q: jax.Array,
    k: jax.Array,
    a: jax.Array,
    b: jax.Array,
    x: jax.Array,
    mask: jax.Array | None,
    transpose: bool,
    *,
    block: int,
) -> jax.Array:
    """E x (B, H, Tq, e), or E^T x (B, H, Tk, e) with ``transpose``; E_ij = exp(s q_i.k_j + a_i + b_j), 0 off pairs."""
    keys = _Keys(q, k, mask, block)
    b = keys.keys(b)
    if transpose:

        def body_t(j, out):
            e = jnp.exp(keys.logits(q, a, b, j))
            return jax.lax.dynamic_update_slice_in_dim(out, jnp.swapaxes(e, -1, -2) @ x, j * block, out.ndim - 2)

        out = jnp.zeros((*k.shape[:-2], keys.nb * block, x.shape[-1]), x.dtype)
        return jax.lax.fori_loop(0, keys.nb, body_t, out)[..., : keys.t, :]
    xs = keys.keys(x, -2)

    def body(j, y):
        return y + jnp.exp(keys.logits(q, a, b, j)) @ keys.take(xs, j, -2)

    return jax.lax.fori_loop(0, keys.nb, body, jnp.zeros((*q.shape[:-1], x.shape[-1]), x.dtype))


def grad_qk(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    dout: jax.Array,
    steps: Steps,
    mask: jax.Array | None,
    *,
    block: int,
) -> tuple[jax.Array, jax.Array]:
    """(dq, dk) = (s dC k, s dC^T q), dC recomputed tile by tile from every iteration's potentials."""
    keys = _Keys(q, k, mask, block)
    n = steps.a.shape[0]
    bs, ws, vs = keys.keys(steps.b), keys.keys(steps.w), keys.keys(v, -2)

    def body(j, carry):
        dq, dk = carry
        dc = jnp.zeros((*q.shape[:-1], block), q.dtype)
        for t in range(n):
            e = jnp.exp(keys.logits(q, steps.a[t], bs[t], j))
            if t == n - 1:
                dc = dc + e * (dout @ jnp.swapaxes(keys.take(vs, j, -2), -1, -2))
            dc = dc - (steps.w[t][..., :, None] * e if t % 2 == 0 else e * keys.take(ws[t], j)[..., None, :])
        dq = dq + (dc @ keys.take(keys.k, j, -2)) * keys.scale
        dk = jax.lax.dynamic_update_slice_in_dim(
            dk, (jnp.swapaxes(dc, -1, -2) @ q) * keys.scale, j * block, dk.ndim - 2
        )
        return dq, dk

    dk = jnp.zeros((*k.shape[:-2], keys.nb * block, k.shape[-1]), k.dtype)
    dq, dk = jax.lax.fori_loop(0, keys.nb, body, (jnp.zeros_like(q), dk))
    return dq, dk[..., : keys.t, :]


@functools.cache
def primitives(block: int = DEFAULT_BLOCK) -> Primitives:
    """The pure-JAX passes with ``block`` keys per tile (any T: the keys are padded to whole blocks)."""
    return driver.blocked_primitives(row_lse, col_lse, apply, grad_qk, block)


def _log_col(q: jax.Array, k: jax.Array, mask: jax.Array | None) -> float:
    return 0.0 if mask is not None else math.log(q.shape[-2] / k.shape[-2])


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _blocked(q, k, v, mask, n_iter: int, prims: Primitives):
    return _blocked_fwd(q, k, v, mask, n_iter, prims)[0]


def _blocked_fwd(q, k, v, mask, n_iter, prims):
    a, b = driver.forward(prims, jnp, q, k, n_iter, mask, _log_col(q, k, mask))
    out = prims.apply(q, k, a[-1], b[-1], v, mask, False)
    return out, (q, k, v, mask, out, jnp.stack(a), jnp.stack(b))


def _blocked_bwd(n_iter, prims, residuals, dout):
    q, k, v, mask, out, a, b = residuals
    dq, dk, dv = driver.backward(prims, jnp, q, k, v, out, dout, a, b, mask)
    return dq, dk, dv, None


_blocked.defvjp(_blocked_fwd, _blocked_bwd)


@functools.partial(jax.jit, static_argnames=("n_iter", "prims"))
def blocked_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    n_iter: int,
    mask: jax.Array | None = None,
    prims: Primitives | None = None,
) -> jax.Array:
    """``blocked_attention`` of ``backends/sinkhorn_blocked.py`` in JAX."""
    return _blocked(q, k, v, mask, n_iter, prims or primitives())


__all__ = [
    "DEFAULT_BLOCK",
    "Primitives",
    "Steps",
    "apply",
    "blocked_attention",
    "col_lse",
    "grad_qk",
    "primitives",
    "row_lse",
]
