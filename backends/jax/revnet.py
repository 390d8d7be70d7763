"""RevNet (eq. 4.4): v_{n+1} = v_n + h phi(x_n), x_{n+1} = x_n + h psi(v_{n+1}), x_0 = v_0 = input.

The memory-free version (a ``jax.custom_vjp``) holds x and v in int64 fixed point: additions
are exact there, so the backward recovers every activation bit for bit (no buffer needed).
An overflow makes the output NaN; a reversal that does not end at x_0 = v_0 makes the
gradients NaN.

References: thesis eq. 4.4 (Gomez et al. 2017), section 4.3.3, section 4.5.3 (activations duplicated).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from backends.resnets import ResidualConfig

from ._blocks import Set, add_at, call, keep, keeper, take
from ._fixed import dequantize, out_of_range, quantize


def revnet_forward(cfg: ResidualConfig, phi: Set, psi: Set, x: jax.Array, every: int | None = None):
    """Eq. 4.4 in floats as a scan, differentiable by autodiff; returns (x_N, v_N, kept or None)."""
    out = keep(keeper(cfg.depth // every + 1, x), 0, x, every) if every else None

    def body(carry, pair):
        x, v, out, n = carry
        p, q = (phi, psi) if cfg.tied else pair
        v = v + cfg.scale * call(cfg, p, x)
        x = x + cfg.scale * call(cfg, q, v)
        return (x, v, keep(out, n + 1, x, every), n + 1), None

    init = (x, x, out, jnp.asarray(0, jnp.int64))
    (x, v, out, _), _ = lax.scan(body, init, None if cfg.tied else (phi, psi), length=cfg.depth)
    return x, v, None if out is None else out[:-1]


def revnet_reverse(cfg: ResidualConfig, phi: Set, psi: Set, x: jax.Array, v: jax.Array, every: int | None = None):
    """Invert eq. 4.4 in floats; returns (x_0, v_0, kept or None)."""
    out = keep(keeper(cfg.depth // every + 1, x), cfg.depth, x, every) if every else None

    def body(j, carry):
        x, v, out = carry
        k = cfg.depth - 1 - j
        x = x - cfg.scale * call(cfg, take(cfg, psi, k), v)
        v = v - cfg.scale * call(cfg, take(cfg, phi, k), x)
        return x, v, keep(out, k, x, every)

    x, v, out = lax.fori_loop(0, cfg.depth, body, (x, v, out))
    return x, v, None if out is None else out[:-1]


def _increment(cfg: ResidualConfig, p: Set, big: jax.Array):
    """(float value, fixed-point h f(value), flag): the same function in the forward and backward."""
    big = lax.optimization_barrier(big)
    zf = dequantize(big, cfg.frac_bits, cfg.dtype)
    inc, bad = quantize(call(cfg, p, zf), cfg.frac_bits, cfg.scale)
    return zf, lax.optimization_barrier(inc), bad


def exact_forward(cfg: ResidualConfig, phi: Set, psi: Set, x: jax.Array, every: int | None = None):
    """Eq. 4.4 in int64 fixed point; returns (X_N, V_N, overflow flag, kept or None)."""
    bits = cfg.frac_bits
    big, bad = quantize(x, bits)
    out = keep(keeper(cfg.depth // every + 1, x), 0, dequantize(big, bits, cfg.dtype), every) if every else None

    def body(k, carry):
        big, vel, bad, out = carry
        _, inc, worse = _increment(cfg, take(cfg, phi, k), big)
        vel = vel + inc
        _, inc2, worse2 = _increment(cfg, take(cfg, psi, k), vel)
        big = big + inc2
        bad = bad | worse | worse2 | out_of_range(vel) | out_of_range(big)
        return big, vel, bad, keep(out, k + 1, dequantize(big, bits, cfg.dtype), every)

    big, vel, bad, out = lax.fori_loop(0, cfg.depth, body, (big, big, bad, out))
    return big, vel, bad, None if out is None else out[:-1]


def exact_reverse(
    cfg: ResidualConfig,
    phi: Set,
    psi: Set,
    big: jax.Array,
    vel: jax.Array,
    g: jax.Array | None = None,
    every: int | None = None,
):
    """Undo :func:`exact_forward`, backpropagating a cotangent ``g`` of x_N on the way.

    Returns:
        (X_0, V_0, gradient wrt the input or None, (phi grads, psi grads) or None, kept or None);
        X_0 == V_0 when the reversal was exact.
    """
    top = dequantize(big, cfg.frac_bits, cfg.dtype)
    out = keep(keeper(cfg.depth // every + 1, top), cfg.depth, top, every) if every else None
    zeros = lambda ps: tuple(jnp.zeros_like(p) for p in ps)
    grads = None if g is None else (g, jnp.zeros_like(g), zeros(phi), zeros(psi))
    f = functools.partial(call, cfg)

    def body(j, carry):
        big, vel, grads, out = carry
        k = cfg.depth - 1 - j
        q = take(cfg, psi, k)
        vf, inc, _ = _increment(cfg, q, vel)
        big = big - inc
        p = take(cfg, phi, k)
        xf, inc, _ = _increment(cfg, p, big)
        vel = vel - inc
        if grads is not None:
            gx, gv, gphi, gpsi = grads
            gq, gvv = jax.vjp(f, q, vf)[1](gx * cfg.scale)
            gv = gv + gvv
            gp, gxx = jax.vjp(f, p, xf)[1](gv * cfg.scale)
            grads = (gx + gxx, gv, add_at(cfg, gphi, k, gp), add_at(cfg, gpsi, k, gq))
        return big, vel, grads, keep(out, k, xf, every)

    big, vel, grads, out = lax.fori_loop(0, cfg.depth, body, (big, vel, grads, out))
    gin, gfam = (None, None) if grads is None else (grads[0] + grads[1], (grads[2], grads[3]))
    return big, vel, gin, gfam, None if out is None else out[:-1]


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def revnet_exact_apply(cfg: ResidualConfig, phi: Set, psi: Set, x: jax.Array) -> jax.Array:
    """The RevNet whose backward keeps no activation (fixed-point state, exact reversal).

    Args:
        cfg: the network (static); phi, psi: the two families, stacked (depth, ...) unless tied.
        x: input, (batch, width) or (batch, channels, size, size).

    Returns:
        x_N of x's dtype (NaN on overflow); kept for the backward: X_N and V_N (and the parameters).
    """
    return _fwd(cfg, phi, psi, x)[0]


def _fwd(cfg: ResidualConfig, phi: Set, psi: Set, x: jax.Array):
    big, vel, bad, _ = exact_forward(cfg, phi, psi, x)
    return jnp.where(bad, jnp.nan, dequantize(big, cfg.frac_bits, cfg.dtype)), (phi, psi, big, vel)


def _bwd(cfg: ResidualConfig, res, g: jax.Array):
    phi, psi, big, vel = res
    big0, vel0, gin, (gphi, gpsi), _ = exact_reverse(cfg, phi, psi, big, vel, g)
    one = jnp.where(jnp.all(big0 == vel0), 1.0, jnp.nan).astype(gin.dtype)  # a product stays in place
    return tuple(a * one for a in gphi), tuple(a * one for a in gpsi), gin * one


revnet_exact_apply.defvjp(_fwd, _bwd)
