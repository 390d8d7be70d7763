"""Adam, plain SGD and SGD with momentum on pytrees, written as PyTorch's ``torch.optim`` computes them (optax is absent).

Matching PyTorch's arithmetic (bias corrections in float64, ``eps`` added after the bias-corrected
square root) lets a torch and a JAX training run from the same weights be compared step by step.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

OPTIMIZERS = ("adam", "sgd", "momentum")
_BETA1, _BETA2, _EPS = 0.9, 0.999, 1e-8


def init(optimizer: str, params: Any) -> dict[str, Any]:
    """The optimiser state for ``params``: Adam's moments and step, the momentum buffer, nothing for SGD."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer={optimizer!r}: allowed {', '.join(OPTIMIZERS)}")
    if optimizer == "sgd":
        return {}
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    if optimizer == "momentum":
        return {"buf": zeros}
    return {"m": zeros, "v": zeros, "t": jnp.zeros((), jnp.float64)}


def update(
    optimizer: str,
    params: Any,
    grads: Any,
    state: dict[str, Any],
    lr: float | jax.Array,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
) -> tuple[Any, dict[str, Any]]:
    """One step of ``optimizer`` with learning rate ``lr``; returns the new params and state.

    The gradient first gets ``weight_decay * p`` added, as in ``torch.optim``. Momentum:
    buf <- momentum buf + g, p <- p - lr buf (``torch.optim.SGD``, no dampening). Adam:
    m <- m + (1 - b1)(g - m), v <- b2 v + (1 - b2) g^2,
    p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps), as ``torch.optim.Adam``.
    """
    if weight_decay:
        grads = jax.tree_util.tree_map(lambda p, g: g + jnp.asarray(weight_decay, p.dtype) * p, params, grads)
    if optimizer == "sgd":
        return jax.tree_util.tree_map(lambda p, g: p - jnp.asarray(lr, p.dtype) * g, params, grads), state
    if optimizer == "momentum":
        buf = jax.tree_util.tree_map(lambda b, g: jnp.asarray(momentum, g.dtype) * b + g, state["buf"], grads)
        return jax.tree_util.tree_map(lambda p, b: p - jnp.asarray(lr, p.dtype) * b, params, buf), {"buf": buf}
    t = state["t"] + 1.0
    step = lr / (1.0 - _BETA1**t)
    bc2_sqrt = jnp.sqrt(1.0 - _BETA2**t)
    m = jax.tree_util.tree_map(lambda m, g: m + jnp.asarray(1 - _BETA1, g.dtype) * (g - m), state["m"], grads)
    v = jax.tree_util.tree_map(
        lambda v, g: jnp.asarray(_BETA2, g.dtype) * v + jnp.asarray(1 - _BETA2, g.dtype) * g * g, state["v"], grads
    )

    def apply(p: jax.Array, m: jax.Array, v: jax.Array) -> jax.Array:
        denom = jnp.sqrt(v) / bc2_sqrt.astype(p.dtype) + jnp.asarray(_EPS, p.dtype)
        return p - step.astype(p.dtype) * m / denom

    return jax.tree_util.tree_map(apply, params, m, v), {"m": m, "v": v, "t": t}
