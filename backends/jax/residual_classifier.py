"""The classifier of thesis section 2.5.2 in JAX, trained by backprop or the adjoint backward (Fig. 2.4).

Functional like ``pruned_mlp.py``: weights from ``backends.residual_classifier`` (the same
seed gives the same weights as ``backends/torch/residual_classifier.py``); the residual part is
``resnets.apply_config``, whose VJP either stores the activations (backprop) or rebuilds them by
reversing the steps (``adjoint.adjoint_apply``). A step is one compiled function, called once per
minibatch: an epoch scanned in ``lax.scan`` ran 10-25x slower on XLA:CPU (convolutions in a loop).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from backends.residual_classifier import STEM_KERNEL, ClassifierConfig, init_params

from . import _optim
from ._blocks import batch_norm
from ._trainer import minibatch_index
from .resnets import apply_config

Params = dict[str, Any]


def residual_classifier_init(config: ClassifierConfig, seed: int, device: jax.Device | str = "cpu") -> Params:
    """``backends.residual_classifier.ResidualClassifierInit`` in JAX."""
    dev = jax.devices(device)[0] if isinstance(device, str) else device
    return jax.tree_util.tree_map(lambda a: jax.device_put(a, dev), init_params(config, seed))


def residual_classifier_apply(params: Params, x: jax.Array, config: ClassifierConfig) -> jax.Array:
    """``backends.residual_classifier.ResidualClassifierApply`` in JAX."""
    pad = STEM_KERNEL // 2
    h = lax.conv_general_dilated(
        x, params["stem.weight"], (1, 1), ((pad, pad), (pad, pad)), dimension_numbers=("NCHW", "OIHW", "NCHW")
    )
    h = h + jnp.reshape(params["stem.bias"], (1, -1, 1, 1))
    h = jax.nn.relu(batch_norm(h, params["stem_bn.weight"], params["stem_bn.bias"]))
    h = apply_config(config.body(), params["body"], h)
    return jnp.mean(h, axis=(2, 3)) @ params["head.weight"].T + jnp.expand_dims(params["head.bias"], 0)


def _loss(params: Params, x: jax.Array, y: jax.Array, config: ClassifierConfig) -> tuple[jax.Array, jax.Array]:
    logits = residual_classifier_apply(params, x, config)
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(logp, jnp.expand_dims(y, -1), axis=-1)[:, 0].mean(), logits


def _step(
    params: Params,
    state: dict[str, Any],
    x: jax.Array,
    y: jax.Array,
    lr: jax.Array,
    *,
    config: ClassifierConfig,
    momentum: float,
    weight_decay: float,
):
    """One SGD-with-momentum step on the minibatch (x, y): (params, state, loss, correct predictions)."""
    (loss, logits), grads = jax.value_and_grad(_loss, has_aux=True)(params, x, y, config)
    params, state = _optim.update("momentum", params, grads, state, lr, momentum=momentum, weight_decay=weight_decay)
    return params, state, loss, (jnp.argmax(logits, -1) == y).sum()


class JaxResidualClassifierTrainer:
    """SGD with momentum and weight decay (as ``torch.optim.SGD``) on cross-entropy; the lr is set per epoch."""

    def __init__(self, config: ClassifierConfig, params: Params, momentum: float, weight_decay: float):
        self.config, self.params = config, params
        self._state = _optim.init("momentum", params)
        self._step = jax.jit(functools.partial(_step, config=config, momentum=momentum, weight_decay=weight_decay))
        self._forward = jax.jit(functools.partial(residual_classifier_apply, config=config))

    def compile(self, x: jax.Array, y: jax.Array, batch: int) -> None:
        """Compile the step for minibatches of ``batch`` ahead of time, so no epoch's time includes it."""
        self._step.lower(self.params, self._state, x[:batch], y[:batch], jnp.asarray(0.0, jnp.float64)).compile()

    def fit_epoch(self, x: jax.Array, y: jax.Array, order: np.ndarray, batch: int, lr: float) -> tuple[float, float]:
        """One pass over ``order`` in minibatches of ``batch`` (the last incomplete one dropped) at learning rate ``lr``.

        Returns:
            The mean training loss and the running training accuracy over the epoch.
        """
        idx = minibatch_index(order, batch)
        rate = jnp.asarray(lr, jnp.float64)
        losses, correct = [], []
        for ib in idx:
            self.params, self._state, loss, right = self._step(self.params, self._state, x[ib], y[ib], rate)
            losses.append(loss)
            correct.append(right)
        return float(jnp.mean(jnp.stack(losses))), float(jnp.sum(jnp.stack(correct))) / idx.size

    def body_gradients(self, x: jax.Array, y: jax.Array, backward: str) -> dict[str, np.ndarray]:
        """The residual blocks' weight gradients by ``backward`` (see ``backends.signatures``)."""
        config = dataclasses.replace(self.config, backward=backward)
        grads = jax.jit(jax.grad(lambda p: _loss(p, x, y, config)[0]))(self.params)
        return {k: np.asarray(v, np.float64) for k, v in grads["body"].items()}

    def predict(self, x: jax.Array) -> np.ndarray:
        """Predicted class of every example, (N,) int64; the norms use the statistics of ``x`` as one batch."""
        return np.asarray(jnp.argmax(self._forward(self.params, x), -1)).astype(np.int64)


def residual_classifier_trainer(
    config: ClassifierConfig, params: Params, momentum: float = 0.9, weight_decay: float = 5e-4
) -> JaxResidualClassifierTrainer:
    """``backends.residual_classifier.ResidualClassifierTrainer`` in JAX."""
    return JaxResidualClassifierTrainer(config, params, momentum, weight_decay)
