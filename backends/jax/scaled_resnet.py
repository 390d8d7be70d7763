"""The scaled residual network of thesis eq. 3.3 in JAX, and its full-batch gradient descent.

The forward is a ``lax.scan`` over the stacked layers; the gradient is ``jax.grad`` of it; a run
of gradient steps is one compiled ``lax.scan`` over the steps (compiled once per shape).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from backends.scaled_resnet import check_activation, check_gd

Params = dict[str, jax.Array]


def _act(name: str, a: jax.Array) -> jax.Array:
    if name == "gelu":
        return jax.nn.gelu(a, approximate=False)
    if name == "relu":
        return jax.nn.relu(a)
    return a


def _forward(params: Params, x: jax.Array, activation: str) -> jax.Array:
    v, w = params["V"], params["W"]
    depth, width, hidden = v.shape
    c = jnp.asarray(1.0 / (depth * math.sqrt(hidden)), x.dtype)
    s = jnp.asarray(1.0 / math.sqrt(width), x.dtype)

    def layer(h, vw):
        vk, wk = vw
        return h + (_act(activation, (h @ wk.T) * s) @ vk.T) * c, None

    return jax.lax.scan(layer, x, (v, w))[0]


@functools.partial(jax.jit, static_argnames=("activation",))
def _apply(params: Params, x: jax.Array, activation: str) -> jax.Array:
    return _forward(params, x, activation)


def scaled_resnet_apply(params: Params, x: jax.Array, activation: str = "gelu") -> jax.Array:
    """``backends.scaled_resnet.ScaledResnetApply`` in JAX."""
    return _apply(params, x, check_activation(activation))


def _loss(params: Params, x: jax.Array, y: jax.Array, activation: str) -> jax.Array:
    r = _forward(params, x, activation) - y
    return (r * r).sum() / x.shape[0]


def _max_layer_diff(params: Params) -> jax.Array:
    v, w = params["V"], params["W"]
    if v.shape[0] < 2:
        return jnp.zeros((), v.dtype)
    dv = jnp.sqrt(((v[1:] - v[:-1]) ** 2).sum(axis=(1, 2)))
    dw = jnp.sqrt(((w[1:] - w[:-1]) ** 2).sum(axis=(1, 2)))
    return (dv + dw).max()


@functools.partial(jax.jit, static_argnames=("steps", "activation"))
def _gd(params: Params, x: jax.Array, y: jax.Array, lr: jax.Array, steps: int, activation: str):
    grad = jax.value_and_grad(_loss)

    def step(p, _):
        loss, g = grad(p, x, y, activation)
        diff = _max_layer_diff(p)
        return jax.tree_util.tree_map(lambda a, b: a - lr.astype(a.dtype) * b, p, g), (loss, diff)

    p, (losses, diffs) = jax.lax.scan(step, params, None, length=steps)
    losses = jnp.concatenate([losses, jnp.expand_dims(_loss(p, x, y, activation), 0)])
    diffs = jnp.concatenate([diffs, jnp.expand_dims(_max_layer_diff(p), 0)])
    return p, losses, diffs


def scaled_resnet_gd(
    params: Params, x: jax.Array, y: jax.Array, lr: float, steps: int, activation: str = "gelu"
) -> tuple[Params, jax.Array, jax.Array]:
    """``backends.scaled_resnet.ScaledResnetGd`` in JAX."""
    check_gd(activation, steps)
    return _gd(params, x, y, jnp.asarray(lr, jnp.float64), int(steps), activation)
