"""The pruned MLP of thesis section 7.6 in JAX: W_i = topkmag(W'_i), hard or relaxed, and its SGD trainer.

Functional like ``vit.py``: weights from ``backends.pruned_mlp`` (the same seed gives the same
weights as ``backends/torch/pruned_mlp.py``); the pruning is ``topk.py``'s operators on each
flattened weight matrix; an epoch is one compiled ``lax.scan`` over the minibatches.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from backends.pruned_mlp import PrunedMLPConfig, init_params, pruned_weights

from . import _optim
from ._trainer import ScanTrainer
from .topk import hard_topk_mag, topk_mag

Params = dict[str, Any]


def pruned_mlp_init(
    config: PrunedMLPConfig, seed: int, device: jax.Device | str = "cpu", dtype: str = "float32"
) -> Params:
    """``backends.pruned_mlp.PrunedMlpInit`` in JAX."""
    dev = jax.devices(device)[0] if isinstance(device, str) else device
    return jax.tree_util.tree_map(lambda a: jax.device_put(a, dev), init_params(config, seed, dtype))


def pruned_mlp_weights(params: Params, config: PrunedMLPConfig) -> list[jax.Array]:
    """``backends.pruned_mlp.PrunedMlpWeights`` in JAX."""
    return pruned_weights(params["w"], config, topk_mag, hard_topk_mag)


def pruned_mlp_apply(params: Params, x: jax.Array, config: PrunedMLPConfig) -> jax.Array:
    """``backends.pruned_mlp.PrunedMlpApply`` in JAX."""
    h = x.reshape(x.shape[0], -1)
    weights = pruned_mlp_weights(params, config)
    for i, (w, b) in enumerate(zip(weights, params["b"])):
        h = h @ w + jnp.expand_dims(b, 0)
        if i < len(weights) - 1:
            h = jax.nn.relu(h)
    return h


def _loss(params: Params, x: jax.Array, y: jax.Array, config: PrunedMLPConfig) -> tuple[jax.Array, jax.Array]:
    logits = pruned_mlp_apply(params, x, config)
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(logp, jnp.expand_dims(y, -1), axis=-1)[:, 0].mean(), logits


def _epoch(
    params: Params,
    state: dict[str, Any],
    x: jax.Array,
    y: jax.Array,
    idx: jax.Array,
    *,
    config: PrunedMLPConfig,
    lr: float,
):
    """Scan the minibatches ``idx`` (n_batches, batch): one SGD step each."""
    grad_fn = jax.value_and_grad(_loss, has_aux=True)

    def step(carry, ib):
        p, s = carry
        (loss, logits), grads = grad_fn(p, x[ib], y[ib], config)
        p, s = _optim.update("sgd", p, grads, s, lr)
        return (p, s), (loss, (jnp.argmax(logits, -1) == y[ib]).sum())

    (params, state), (losses, correct) = jax.lax.scan(step, (params, state), idx)
    return params, state, losses.mean(), correct.sum()


class JaxPrunedMLPTrainer(ScanTrainer):
    """Trains W'_i, b_i with plain SGD on cross-entropy through the pruning operator.

    ``fit_epoch`` returns the mean loss and the running accuracy of the pass.
    """

    def __init__(self, config: PrunedMLPConfig, params: Params, lr: float):
        super().__init__(params, "sgd", functools.partial(_epoch, config=config, lr=lr))
        self.config = config
        self._forward = jax.jit(functools.partial(pruned_mlp_apply, config=config))
        self._weights = jax.jit(functools.partial(pruned_mlp_weights, config=config))

    def predict(self, x: jax.Array, batch: int = 1024) -> np.ndarray:
        """Predicted class of every example, (N,) int64."""
        out = [
            np.asarray(jnp.argmax(self._forward(self.params, x[i : i + batch]), -1))
            for i in range(0, x.shape[0], batch)
        ]
        return np.concatenate(out).astype(np.int64)

    def weights(self) -> list[np.ndarray]:
        """The effective (pruned) weight matrices, float64 (in, out) each."""
        return [np.asarray(w, np.float64) for w in self._weights(self.params)]


def pruned_mlp_trainer(config: PrunedMLPConfig, params: Params, lr: float) -> JaxPrunedMLPTrainer:
    """``backends.pruned_mlp.PrunedMlpTrainer`` in JAX."""
    if not lr > 0:
        raise ValueError(f"lr={lr!r}: expected > 0")
    return JaxPrunedMLPTrainer(config, params, lr)
