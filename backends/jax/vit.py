"""The small ViT and the attention-only ViT (Sinkformers, Fig. 5.6) in JAX, and their trainer.

Functional: the weights are a pytree made from ``backends.vit`` (the same seed gives the same
weights as ``backends/torch/vit.py``), the forward is ``vit_apply`` and the training loop sits
behind ``vit_trainer``, whose object has the same methods in both backends. An epoch is one
compiled ``lax.scan`` over the minibatches.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from backends.vit import ViTConfig, check_trainer, init_params

from . import _optim
from ._trainer import ScanTrainer
from .sinkhorn import attention

Params = dict[str, Any]
MLP = Callable[[dict[str, jax.Array], jax.Array], jax.Array]
OPTIMIZERS = _optim.OPTIMIZERS
_LN_EPS = 1e-5


def vit_init(config: ViTConfig, seed: int, device: jax.Device | str = "cpu", dtype: str = "float32") -> Params:
    """``backends.vit.VitInit`` in JAX."""
    dev = jax.devices(device)[0] if isinstance(device, str) else device
    return jax.tree_util.tree_map(lambda a: jax.device_put(a, dev), init_params(config, seed, dtype))


def _affine(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    """``x @ w + b`` with the bias broadcast explicitly (strict rank promotion)."""
    y = x @ w
    return y + b.reshape((1,) * (y.ndim - 1) + b.shape)


def dense_mlp(params: dict[str, jax.Array], x: jax.Array) -> jax.Array:
    """A block's MLP: ``gelu(x w1 + b1) w2 + b2`` (exact GELU), (B, T, width) -> (B, T, width)."""
    return _affine(jax.nn.gelu(_affine(x, params["w1"], params["b1"]), approximate=False), params["w2"], params["b2"])


def _layer_norm(params: dict[str, jax.Array], x: jax.Array) -> jax.Array:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    lead = (1,) * (x.ndim - 1)
    scale, bias = (
        params["scale"].reshape(lead + params["scale"].shape),
        params["bias"].reshape(lead + params["bias"].shape),
    )
    return (x - mean) / jnp.sqrt(var + jnp.asarray(_LN_EPS, x.dtype)) * scale + bias


def _patchify(images: jax.Array, patch: int) -> jax.Array:
    """(B, C, H, W) -> (B, (H/p)(W/p), p p C), patches row-major, pixels (p1, p2, c) inside."""
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.transpose(0, 2, 4, 3, 5, 1).reshape(b, (h // patch) * (w // patch), patch * patch * c)


@functools.partial(jax.jit, static_argnames=("config", "mlp"))
def vit_apply(
    params: Params, images: jax.Array, config: ViTConfig, mlp: MLP | None = None
) -> tuple[jax.Array, list[jax.Array]]:
    """``backends.vit.VitApply`` in JAX."""
    mlp = dense_mlp if mlp is None else mlp
    b = images.shape[0]
    x = _affine(_patchify(images, config.patch), params["embed"]["w"], params["embed"]["b"])
    cls = jnp.broadcast_to(params["cls"], (b, 1, config.width))
    x = jnp.concatenate([cls, x], axis=1) + jnp.expand_dims(params["pos"], 0)
    maps = []
    for block in params["blocks"]:
        h = _layer_norm(block["ln1"], x)
        qkv = (h @ block["attn"]["wqkv"]).reshape(b, config.tokens, 3, config.heads, config.head_dim)
        q, k, v = jnp.moveaxis(qkv.transpose(0, 3, 1, 4, 2), -1, 0)
        out, weights = attention(q, k, v, config.normalization, config.sinkhorn_iters, implicit=config.implicit)
        out = jnp.swapaxes(out, 1, 2).reshape(b, config.tokens, config.heads * config.head_dim)
        x = x + _affine(out, block["attn"]["wo"], block["attn"]["bo"])
        if config.mlp_dim is not None:
            x = x + mlp(block["mlp"], _layer_norm(block["ln2"], x))
        maps.append(weights)
    logits = _affine(_layer_norm(params["head"]["ln"], x[:, 0]), params["head"]["w"], params["head"]["b"])
    return logits, maps


def _loss(
    params: Params, images: jax.Array, labels: jax.Array, config: ViTConfig, mlp: MLP | None
) -> tuple[jax.Array, jax.Array]:
    logits, _ = vit_apply(params, images, config, mlp)
    logp = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(logp, jnp.expand_dims(labels, -1), axis=-1)[:, 0]
    return nll.mean(), logits


def _epoch(
    params: Params,
    state: dict[str, Any],
    images: jax.Array,
    labels: jax.Array,
    idx: jax.Array,
    *,
    config: ViTConfig,
    mlp: MLP | None,
    optimizer: str,
    lr: float,
):
    """Scan the minibatches ``idx`` (n_batches, batch): one optimiser step each."""
    grad_fn = jax.value_and_grad(_loss, has_aux=True)

    def step(carry, ib):
        p, s = carry
        (loss, logits), grads = grad_fn(p, images[ib], labels[ib], config, mlp)
        p, s = _optim.update(optimizer, p, grads, s, lr)
        return (p, s), (loss, (jnp.argmax(logits, -1) == labels[ib]).sum())

    (params, state), (losses, correct) = jax.lax.scan(step, (params, state), idx)
    return params, state, losses.mean(), correct.sum()


class JaxViTTrainer(ScanTrainer):
    """Trains a ViT with Adam or SGD on cross-entropy; predicts and returns attention matrices.

    ``fit_epoch`` returns the mean loss and the running accuracy of the epoch.
    """

    def __init__(self, config: ViTConfig, params: Params, lr: float, optimizer: str, mlp: MLP | None):
        super().__init__(
            params, optimizer, functools.partial(_epoch, config=config, mlp=mlp, optimizer=optimizer, lr=lr)
        )
        self.config, self.mlp = config, mlp
        self._forward = jax.jit(functools.partial(vit_apply, config=config, mlp=mlp))

    def predict(self, images: jax.Array, batch: int = 500) -> np.ndarray:
        """Predicted class of every image, (N,) int64 (the last chunk padded to ``batch``)."""
        n = images.shape[0]
        pad = (-n) % batch if n > batch else 0
        if pad:
            images = jnp.concatenate([images, jnp.zeros((pad, *images.shape[1:]), images.dtype)])
        size = min(batch, images.shape[0])
        out = [
            np.asarray(jnp.argmax(self._forward(self.params, images[i : i + size])[0], -1))
            for i in range(0, images.shape[0], size)
        ]
        return np.concatenate(out)[:n].astype(np.int64)

    def attention(self, images: jax.Array) -> list[np.ndarray]:
        """Attention matrices of every layer on ``images``, each (B, heads, tokens, tokens) float64."""
        _, maps = self._forward(self.params, images)
        return [np.asarray(m, np.float64) for m in maps]


def vit_trainer(
    config: ViTConfig, params: Params, lr: float, optimizer: str = "adam", mlp: MLP | None = None
) -> JaxViTTrainer:
    """``backends.vit.VitTrainer`` in JAX (Adam with PyTorch's defaults and arithmetic, ``_optim``)."""
    check_trainer(lr, optimizer, OPTIMIZERS)
    return JaxViTTrainer(config, params, lr, optimizer, mlp)
