"""The scaled residual network of thesis eq. 3.3 in JAX, and its full-batch gradient descent.

The forward is a ``lax.scan`` over the stacked layers; the gradient is ``jax.grad`` of it; a run
of gradient steps is one compiled ``lax.scan`` over the steps (compiled once per shape).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from ..scaled_resnet_init import check_activation

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
    """Output h_L of eq. 3.3 with A = B = identity.

    Args:
        params: {"V": (L, q, m), "W": (L, m, q)} (``backends.scaled_resnet_init``).
        x: (n, q) inputs, the dtype of the weights.
        activation: ``gelu`` (exact), ``relu`` or ``identity``.

    Returns:
        (n, q) outputs.

    References:
        Thesis eq. 3.3, section 3.5.1.
    """
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
    """``steps`` steps of full-batch gradient descent on the mean squared error of eq. 3.3.

    Args:
        params: {"V": (L, q, m), "W": (L, m, q)}; not modified.
        x, y: (n, q) inputs and targets.
        lr: the step size of every weight (the thesis uses L x 1e-2: gradient flow (3.4) has a
            factor L in front of the layers' gradients).
        steps: number of gradient steps (>= 0).
        activation: ``gelu``, ``relu`` or ``identity``.

    Returns:
        (new params, losses, layer_diffs): losses (steps + 1,) is the loss before the first step
        and after each step; layer_diffs (steps + 1,) is max_k ||Z_{k+1} - Z_k||_F at the same
        times (0 for L = 1).

    References:
        Thesis eq. 3.3-3.4, section 3.5.1, appendix 3.E, Fig. 3.1.
    """
    check_activation(activation)
    if steps < 0:
        raise ValueError(f"steps={steps} must be >= 0")
    return _gd(params, x, y, jnp.asarray(lr, jnp.float64), int(steps), activation)
