"""Momentum ResNets (eq. 4.2): backprop, and the exactly reversible memory-free backward.

The memory-free model (a ``jax.custom_vjp``) holds x and v in int64 fixed point and multiplies
v by gamma = n/d with an information buffer (appendix 4.C; multi-word, allocated before the
loop, see backends/fixed_point.py), so the backward recovers every activation bit for bit from
the output, the final velocity and the buffer, recomputing each block once (eq. 4.3) and
backpropagating with the formulas of appendix 4.E. Under jit an overflow cannot raise: it
makes the output NaN; a reversal that does not end at v_0 = 0 with an empty buffer makes the
gradients NaN.

References: thesis chapter 4: eq. 4.2, 4.3, 4.17; sections 4.3.1, 4.3.2; appendices 4.C, 4.E.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from backends.resnets import ResidualConfig

from ._blocks import Set, add_at, call, keep, keeper, take
from ._fixed import dequantize, div_ratio, mul_ratio, out_of_range, quantize


def momentum_forward(cfg: ResidualConfig, ps: Set, x: jax.Array, every: int | None = None):
    """v_{n+1} = gamma v_n + coef f(x_n, theta_n), x_{n+1} = x_n + v_{n+1}, v_0 = 0 (eq. 4.2), in floats.

    Returns:
        (x_N, v_N, kept activations or None); differentiable by autodiff (the ``momentum`` model).
    """
    out = keep(keeper(cfg.depth // every + 1, x), 0, x, every) if every else None

    def body(carry, p):
        x, v, out, n = carry
        v = cfg.gamma * v + cfg.coef * call(cfg, ps if cfg.tied else p, x)
        x = x + v
        return (x, v, keep(out, n + 1, x, every), n + 1), None

    init = (x, jnp.zeros_like(x), out, jnp.asarray(0, jnp.int64))
    (x, v, out, _), _ = lax.scan(body, init, None if cfg.tied else ps, length=cfg.depth)
    return x, v, None if out is None else out[:-1]


def momentum_reverse(cfg: ResidualConfig, ps: Set, x: jax.Array, v: jax.Array, every: int | None = None):
    """Invert eq. 4.2 in floats by eq. 4.3 (division by gamma); returns (x_0, v_0, kept or None)."""
    if cfg.gamma_n == 0:
        raise ValueError("gamma=0: the momentum step cannot be inverted (v_n is lost)")
    out = keep(keeper(cfg.depth // every + 1, x), cfg.depth, x, every) if every else None

    def body(j, carry):
        x, v, out = carry
        k = cfg.depth - 1 - j
        x = x - v
        v = (v - cfg.coef * call(cfg, take(cfg, ps, k), x)) / cfg.gamma
        return x, v, keep(out, k, x, every)

    x, v, out = lax.fori_loop(0, cfg.depth, body, (x, v, out))
    return x, v, None if out is None else out[:-1]


def _increment(cfg: ResidualConfig, p: Set, big: jax.Array):
    """(x as float, fixed-point coef f(x), out-of-range flag): the same function in both passes."""
    big = lax.optimization_barrier(big)
    xf = dequantize(big, cfg.frac_bits, cfg.dtype)
    inc, bad = quantize(call(cfg, p, xf), cfg.frac_bits, cfg.coef)
    return xf, lax.optimization_barrier(inc), bad


def exact_forward(cfg: ResidualConfig, ps: Set, x: jax.Array, every: int | None = None):
    """Eq. 4.2 in int64 fixed point with the reversible multiplication by gamma.

    Returns:
        (X_N, V_N, buffer (words, *x.shape), overflow flag, kept activations or None).
    """
    bits, spw = cfg.frac_bits, cfg.steps_per_word
    big, bad = quantize(x, bits)
    buf = jnp.zeros((cfg.words, *x.shape), jnp.int64)
    out = keep(keeper(cfg.depth // every + 1, x), 0, dequantize(big, bits, cfg.dtype), every) if every else None

    def body(k, carry):
        big, vel, buf, bad, out = carry
        _, inc, worse = _increment(cfg, take(cfg, ps, k), big)
        if cfg.words:
            vel, word = mul_ratio(
                vel, lax.dynamic_index_in_dim(buf, k // spw, 0, keepdims=False), cfg.gamma_n, cfg.gamma_d
            )
            buf = lax.dynamic_update_index_in_dim(buf, word, k // spw, 0)
        vel = vel + inc
        big = big + vel
        bad = bad | worse | out_of_range(vel) | out_of_range(big)
        return big, vel, buf, bad, keep(out, k + 1, dequantize(big, bits, cfg.dtype), every)

    big, vel, buf, bad, out = lax.fori_loop(0, cfg.depth, body, (big, jnp.zeros_like(big), buf, bad, out))
    return big, vel, buf, bad, None if out is None else out[:-1]


def exact_reverse(
    cfg: ResidualConfig,
    ps: Set,
    big: jax.Array,
    vel: jax.Array,
    buf: jax.Array,
    g: jax.Array | None = None,
    every: int | None = None,
):
    """Undo :func:`exact_forward` layer by layer (eq. 4.3), recomputing each block once.

    With a cotangent ``g`` of x_N, also backpropagate (appendix 4.E): with s = g_x + g_v,
    g_x += coef J_f^T s, g_v = gamma s, parameter gradients coef d_theta f^T s.

    Returns:
        (X_0, V_0, buffer, gradient wrt x_0 or None, parameter gradients or None, kept or None);
        V_0 and the buffer are zero when the reversal was exact.
    """
    bits, spw = cfg.frac_bits, cfg.steps_per_word
    top = dequantize(big, bits, cfg.dtype)
    out = keep(keeper(cfg.depth // every + 1, top), cfg.depth, top, every) if every else None
    grads = None if g is None else (g, jnp.zeros_like(g), tuple(jnp.zeros_like(p) for p in ps))

    def body(j, carry):
        big, vel, buf, grads, out = carry
        k = cfg.depth - 1 - j
        big = big - vel
        p = take(cfg, ps, k)
        xf, inc, _ = _increment(cfg, p, big)
        vel = vel - inc
        if cfg.words:
            vel, word = div_ratio(
                vel, lax.dynamic_index_in_dim(buf, k // spw, 0, keepdims=False), cfg.gamma_n, cfg.gamma_d
            )
            buf = lax.dynamic_update_index_in_dim(buf, word, k // spw, 0)
        if grads is not None:
            gx, gv, gps = grads
            total = gx + gv
            _, vjp = jax.vjp(functools.partial(call, cfg), p, xf)
            gp, gxx = vjp(total * cfg.coef)
            grads = (gx + gxx, cfg.gamma * total, add_at(cfg, gps, k, gp))
        return big, vel, buf, grads, keep(out, k, xf, every)

    big, vel, buf, grads, out = lax.fori_loop(0, cfg.depth, body, (big, vel, buf, grads, out))
    gx, gps = (None, None) if grads is None else (grads[0], grads[2])
    return big, vel, buf, gx, gps, None if out is None else out[:-1]


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def momentum_exact_apply(cfg: ResidualConfig, ps: Set, x: jax.Array) -> jax.Array:
    """The Momentum ResNet whose backward keeps no activation (``momentum_reversible``).

    Args:
        cfg: the network (static: gamma = n/d, coef, fixed point, buffer schedule).
        ps: its family, stacked (depth, ...) unless tied.
        x: input, (batch, width) or (batch, channels, size, size).

    Returns:
        x_N of x's dtype (NaN if the fixed-point range overflowed). Kept for the backward:
        X_N, V_N and the buffer (and the parameters).

    References: thesis eq. 4.2, 4.3, section 4.3.2, appendices 4.C and 4.E.
    """
    return _fwd(cfg, ps, x)[0]


def _fwd(cfg: ResidualConfig, ps: Set, x: jax.Array):
    big, vel, buf, bad, _ = exact_forward(cfg, ps, x)
    y = jnp.where(bad, jnp.nan, dequantize(big, cfg.frac_bits, cfg.dtype))
    return y, (ps, big, vel, buf)


def _bwd(cfg: ResidualConfig, res, g: jax.Array):
    ps, big, vel, buf = res
    _, vel, buf, gx, gps, _ = exact_reverse(cfg, ps, big, vel, buf, g)
    one = jnp.where(jnp.any(vel != 0) | jnp.any(buf != 0), jnp.nan, 1.0).astype(gx.dtype)  # a product stays in place
    return tuple(a * one for a in gps), gx * one


momentum_exact_apply.defvjp(_fwd, _bwd)
