"""Autoregressive in-context learning (thesis chapter 6) in JAX: the Transformer, its trainer,
and L steps of gradient descent on the in-context loss (eq. 6.5), the baseline of Fig. 6.5.

Functional like ``vit.py``: the weights are a pytree made from ``backends.ar_transformer`` (the same seed
gives the same weights as ``backends/torch/ar_transformer.py``); an epoch is one compiled
``lax.scan`` over the minibatches, with the Adam of ``_optim`` (PyTorch's arithmetic).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from backends.ar_transformer import ARConfig, init_params

from . import _optim
from ._trainer import ScanTrainer

Params = dict[str, Any]
_LN_EPS = 1e-5


def ar_transformer_init(
    config: ARConfig, seed: int, device: jax.Device | str = "cpu", dtype: str = "float32"
) -> Params:
    """``backends.ar_transformer.ArTransformerInit`` in JAX."""
    dev = jax.devices(device)[0] if isinstance(device, str) else device
    return jax.tree_util.tree_map(lambda a: jax.device_put(a, dev), init_params(config, seed, dtype))


def _norm(p: dict[str, jax.Array], x: jax.Array) -> jax.Array:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    lead = (1,) * (x.ndim - 1)
    return (x - mean) / jnp.sqrt(var + jnp.asarray(_LN_EPS, x.dtype)) * p["scale"].reshape(lead + p["scale"].shape) + p[
        "bias"
    ].reshape(lead + p["bias"].shape)


def _bias(b: jax.Array, ndim: int) -> jax.Array:
    return b.reshape((1,) * (ndim - 1) + b.shape)


@functools.partial(jax.jit, static_argnames=("config",))
def ar_transformer_apply(params: Params, tokens: jax.Array, config: ARConfig) -> jax.Array:
    """``backends.ar_transformer.ArTransformerApply`` in JAX."""
    x = tokens
    length = x.shape[1]
    causal = jnp.expand_dims(jnp.tril(jnp.ones((length, length), dtype=bool)), 0)
    scale = jnp.asarray(1.0 / math.sqrt(config.width), x.dtype)
    for block in params["blocks"]:
        scores = (x @ block["wq"]) @ jnp.swapaxes(x @ block["wk"], 1, 2) * scale
        if config.softmax:
            weights = jax.nn.softmax(jnp.where(causal, scores, jnp.asarray(-jnp.inf, x.dtype)), axis=-1)
        else:
            weights = jnp.where(causal, scores, jnp.zeros((), x.dtype))
        x = x + _norm(block["ln"], (weights @ (x @ block["wv"])) @ block["wo"])
        if config.mlp_dim is not None:
            mlp = block["mlp"]
            hidden = jax.nn.relu(x @ mlp["w1"] + _bias(mlp["b1"], x.ndim))
            x = x + _norm(block["ln_mlp"], hidden @ mlp["w2"] + _bias(mlp["b2"], x.ndim))
    return x[..., : config.dim]


def _loss(params: Params, tokens: jax.Array, targets: jax.Array, config: ARConfig) -> jax.Array:
    pred = ar_transformer_apply(params, tokens, config)
    start = config.loss_start
    return ((pred[:, start:] - targets[:, start:]) ** 2).mean()


def _epoch(
    params: Params,
    state: dict[str, Any],
    tokens: jax.Array,
    targets: jax.Array,
    idx: jax.Array,
    *,
    config: ARConfig,
    lr: float,
):
    """Scan the minibatches ``idx`` (n_batches, batch): one Adam step each; mean loss."""
    grad_fn = jax.value_and_grad(_loss)

    def step(carry, ib):
        p, s = carry
        loss, grads = grad_fn(p, tokens[ib], targets[ib], config)
        p, s = _optim.update("adam", p, grads, s, lr)
        return (p, s), loss

    (params, state), losses = jax.lax.scan(step, (params, state), idx)
    return params, state, losses.mean()


class JaxARTrainer(ScanTrainer):
    """Trains the Transformer with Adam on the next-state mean squared error; ``fit_epoch`` returns the mean loss."""

    examples = "training sequences"

    def __init__(self, config: ARConfig, params: Params, lr: float):
        super().__init__(params, "adam", functools.partial(_epoch, config=config, lr=lr))
        self.config = config

    def predict(self, tokens: jax.Array, batch: int = 1024) -> np.ndarray:
        """Predictions (n, T, d) float64 of every sequence, ``batch`` sequences at a time."""
        out = [
            np.asarray(ar_transformer_apply(self.params, tokens[i : i + batch], self.config), np.float64)
            for i in range(0, tokens.shape[0], batch)
        ]
        return np.concatenate(out)


def ar_transformer_trainer(config: ARConfig, params: Params, lr: float) -> JaxARTrainer:
    """``backends.ar_transformer.ArTransformerTrainer`` in JAX (Adam with PyTorch's defaults and arithmetic)."""
    if not lr > 0:
        raise ValueError(f"lr={lr!r}: expected > 0")
    return JaxARTrainer(config, params, lr)


def _exclusive_cumsum(x: jax.Array) -> jax.Array:
    """sum_{j<t} x_j along axis 1 (zero at t = 0)."""
    return jnp.concatenate([jnp.zeros_like(x[:, :1]), jnp.cumsum(x[:, :-1], axis=1)], axis=1)


@functools.partial(jax.jit, static_argnames=("steps",))
def _gd_predict(states: jax.Array, steps: int, step_size: jax.Array) -> jax.Array:
    s, nxt = states[:, :-1], states[:, 1:]
    gram = _exclusive_cumsum(jnp.expand_dims(s, -1) * jnp.expand_dims(s, -2))
    corr = _exclusive_cumsum(jnp.expand_dims(nxt, -1) * jnp.expand_dims(s, -2))
    eta = step_size.astype(states.dtype)
    w = jax.lax.fori_loop(0, steps, lambda _, w: w - eta * (w @ gram - corr), jnp.zeros_like(gram))
    return (w @ jnp.expand_dims(s, -1))[..., 0]


def ar_gd_predict(states: jax.Array, steps: int, step_size: float) -> jax.Array:
    """``backends.ar_transformer.ArGdPredict`` in JAX."""
    if steps < 0:
        raise ValueError(f"steps={steps} must be >= 0")
    return _gd_predict(states, int(steps), jnp.asarray(step_size, jnp.float64))
