"""Adam, plain SGD and SGD with momentum on pytrees, from optax, with ``torch.optim``'s defaults.

Each optimiser is optax's direction (``scale_by_adam``, ``trace``, none) after ``add_decayed_weights``,
then ``p <- p - lr * direction``, which is what ``torch.optim.Adam`` and ``torch.optim.SGD`` compute
(``eps`` added after the bias-corrected square root; momentum without dampening). So a torch and a
JAX training run from the same weights can be compared step by step.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

OPTIMIZERS = ("adam", "sgd", "momentum")
_BETA1, _BETA2, _EPS = 0.9, 0.999, 1e-8  # torch.optim.Adam's defaults


def _direction(optimizer: str, momentum: float, weight_decay: float) -> optax.GradientTransformation:
    """The update direction before the learning rate; its state's structure depends on ``optimizer`` only."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer={optimizer!r}: allowed {', '.join(OPTIMIZERS)}")
    core = {
        "adam": lambda: optax.scale_by_adam(b1=_BETA1, b2=_BETA2, eps=_EPS),
        "momentum": lambda: optax.trace(decay=momentum),
        "sgd": optax.identity,
    }[optimizer]()
    return optax.chain(optax.add_decayed_weights(weight_decay), core)


def init(optimizer: str, params: Any) -> optax.OptState:
    """The optimiser state for ``params``: Adam's moments and step count, the momentum buffer, nothing for SGD."""
    return _direction(optimizer, 0.9, 0.0).init(params)


def update(
    optimizer: str,
    params: Any,
    grads: Any,
    state: optax.OptState,
    lr: float | jax.Array,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
) -> tuple[Any, optax.OptState]:
    """One step of ``optimizer`` with learning rate ``lr``; returns the new params and state.

    The gradient first gets ``weight_decay * p`` added, as in ``torch.optim``. Momentum:
    buf <- momentum buf + g, p <- p - lr buf (``torch.optim.SGD``, no dampening). Adam:
    m <- b1 m + (1 - b1) g, v <- b2 v + (1 - b2) g^2,
    p <- p - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps), as ``torch.optim.Adam``.
    ``lr`` may be traced (a schedule set per epoch); it is cast to each parameter's dtype.
    """
    with jax.numpy_dtype_promotion("standard"):  # optax raises its float decays to the int32 step count
        direction, state = _direction(optimizer, momentum, weight_decay).update(grads, state, params)
    steps = jax.tree_util.tree_map(lambda p, d: -jnp.asarray(lr, p.dtype) * d, params, direction)
    return optax.apply_updates(params, steps), state
