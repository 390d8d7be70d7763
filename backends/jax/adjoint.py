"""Euler and Heun ResNets and their adjoint backward: activations recovered by reversing the step.

The adjoint backward (a ``jax.custom_vjp``) keeps only the output and walks the layers
backwards, reconstructing x_n ~ x_{n+1} - h f(x_{n+1}, theta_n) (eq. 2.6) or by reversing
Heun's step (eq. 2.9), and uses the reconstructed activations in the backpropagation formulas
(eq. 2.7). The gradient is approximate; its error shrinks with depth (Prop. 2.10, 2.12).

References: thesis section 2.4, eq. 2.1, 2.6-2.9.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from backends.resnets import ResidualConfig

from ._blocks import Set, add_at, add_pair_at, call, keep, keeper, take


def _xs(cfg: ResidualConfig, ps: Set, heun: bool):
    if cfg.tied:
        return None
    return (tuple(p[:-1] for p in ps), tuple(p[1:] for p in ps)) if heun else ps


def _heun_step(cfg: ResidualConfig, p0: Set, p1: Set, x: jax.Array) -> jax.Array:
    a = call(cfg, p0, x)
    return x + (cfg.scale / 2) * (a + call(cfg, p1, x + cfg.scale * a))


def euler_forward(
    cfg: ResidualConfig, ps: Set, x: jax.Array, every: int | None = None, checkpointed: bool = False
) -> tuple[jax.Array, jax.Array | None]:
    """x_{n+1} = x_n + h f(x_n, theta_n) (eq. 2.1) as a scan; differentiable by autodiff.

    Args:
        cfg: the network; ps: its family, stacked (sets, ...) unless tied.
        x: input; every: keep x_n for n divisible by ``every``; checkpointed: store only the
            input of each block (``jax.checkpoint`` on the scan body).

    Returns:
        (x_N, kept activations (depth // every + 1, *x.shape) or None).
    """
    out = keep(keeper(cfg.depth // every + 1, x), 0, x, every) if every else None

    def body(carry, p):
        x, out, n = carry
        x = x + cfg.scale * call(cfg, ps if cfg.tied else p, x)
        return (x, keep(out, n + 1, x, every), n + 1), None

    body = jax.checkpoint(body) if checkpointed else body
    (x, out, _), _ = lax.scan(
        body, (x, out, jnp.asarray(0, jnp.int64)), _xs(cfg, ps, False), length=cfg.depth, unroll=cfg.unroll
    )
    return x, None if out is None else out[:-1]


def heun_forward(
    cfg: ResidualConfig, ps: Set, x: jax.Array, every: int | None = None
) -> tuple[jax.Array, jax.Array | None]:
    """Heun's step (eq. 2.8) as a scan over (theta_n, theta_{n+1}); ``ps`` has depth + 1 sets."""
    out = keep(keeper(cfg.depth // every + 1, x), 0, x, every) if every else None

    def body(carry, pair):
        x, out, n = carry
        p0, p1 = (ps, ps) if cfg.tied else pair
        x = _heun_step(cfg, p0, p1, x)
        return (x, keep(out, n + 1, x, every), n + 1), None

    (x, out, _), _ = lax.scan(
        body, (x, out, jnp.asarray(0, jnp.int64)), _xs(cfg, ps, True), length=cfg.depth, unroll=cfg.unroll
    )
    return x, None if out is None else out[:-1]


def euler_reverse(cfg: ResidualConfig, ps: Set, y: jax.Array, g: jax.Array | None = None, every: int | None = None):
    """Walk back from y by x~_n = x~_{n+1} - h f(x~_{n+1}, theta_n) (eq. 2.6).

    With a cotangent ``g``, backpropagate through each step at the reconstructed x~_n (eq. 2.7).

    Returns:
        (x~_0, gradient wrt x_0 or None, parameter gradients or None, kept activations or None).
    """
    n_layers = cfg.depth
    out = keep(keeper(n_layers // every + 1, y), n_layers, y, every) if every else None
    gps = None if g is None else tuple(jnp.zeros_like(p) for p in ps)

    def body(j, carry):
        xt, g, gps, out = carry
        k = n_layers - 1 - j
        p = take(cfg, ps, k)
        prev = xt - cfg.scale * call(cfg, p, xt)
        if g is not None:
            _, vjp = jax.vjp(functools.partial(call, cfg), p, prev)
            gp, gx = vjp(g * cfg.scale)
            g, gps = g + gx, add_at(cfg, gps, k, gp)
        return prev, g, gps, keep(out, k, prev, every)

    xt, g, gps, out = lax.fori_loop(0, n_layers, body, (y, g, gps, out), unroll=cfg.unroll)
    return xt, g, gps, None if out is None else out[:-1]


def heun_reverse(cfg: ResidualConfig, ps: Set, y: jax.Array, g: jax.Array | None = None, every: int | None = None):
    """Walk back from y by reversing Heun's step (eq. 2.9), backpropagating ``g`` through it.

    Returns:
        (x~_0, gradient wrt x_0 or None, parameter gradients or None, kept activations or None).
    """
    n_layers = cfg.depth
    out = keep(keeper(n_layers // every + 1, y), n_layers, y, every) if every else None
    gps = None if g is None else tuple(jnp.zeros_like(p) for p in ps)

    def body(j, carry):
        xt, g, gps, out = carry
        k = n_layers - 1 - j
        p0, p1 = take(cfg, ps, k), take(cfg, ps, k + 1)
        a = call(cfg, p1, xt)
        prev = xt - (cfg.scale / 2) * (a + call(cfg, p0, xt - cfg.scale * a))
        if g is not None:
            _, vjp = jax.vjp(functools.partial(_heun_step, cfg), p0, p1, prev)
            gp0, gp1, g = vjp(g)
            gps = add_pair_at(cfg, gps, k, gp0, gp1)
        return prev, g, gps, keep(out, k, prev, every)

    xt, g, gps, out = lax.fori_loop(0, n_layers, body, (y, g, gps, out), unroll=cfg.unroll)
    return xt, g, gps, None if out is None else out[:-1]


def _forward(cfg: ResidualConfig, ps: Set, x: jax.Array) -> jax.Array:
    """The forward without autodiff: parameter sets read in place (no sliced copies of the weights)."""
    if cfg.rule == "euler":
        step = lambda k, x: x + cfg.scale * call(cfg, take(cfg, ps, k), x)
    else:
        step = lambda k, x: _heun_step(cfg, take(cfg, ps, k), take(cfg, ps, k + 1), x)
    return lax.fori_loop(0, cfg.depth, step, x, unroll=cfg.unroll)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def adjoint_apply(cfg: ResidualConfig, ps: Set, x: jax.Array) -> jax.Array:
    """The Euler or Heun ResNet (``cfg.rule``) whose backward is the adjoint method.

    Args:
        cfg: the network (static); ps: its family, stacked (sets, ...) unless tied.
        x: input, (batch, width) or (batch, channels, size, size).

    Returns:
        x_N, of x's shape; the backward keeps only x_N (and the parameters).

    References: thesis eq. 2.6-2.9.
    """
    return _forward(cfg, ps, x)


def _fwd(cfg: ResidualConfig, ps: Set, x: jax.Array):
    y = _forward(cfg, ps, x)
    return y, (ps, y)


def _bwd(cfg: ResidualConfig, res, g: jax.Array):
    ps, y = res
    _, gx, gps, _ = (euler_reverse if cfg.rule == "euler" else heun_reverse)(cfg, ps, y, g)
    return gps, gx


adjoint_apply.defvjp(_fwd, _bwd)
