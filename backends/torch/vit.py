"""The small ViT and the attention-only ViT (Sinkformers, Fig. 5.6) in PyTorch, and their trainer.

Functional: the weights are a nested dict of tensors made from ``backends.vit`` (the same
seed gives the same weights as ``backends/jax/vit.py``), the forward is ``vit_apply`` and the
training loop sits behind ``vit_trainer``, whose object has the same methods in both backends.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from backends.vit import ViTConfig, check_trainer, init_params

from ._train import classifier_epoch
from .sinkhorn import attention

Params = dict[str, Any]
MLP = Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor]
OPTIMIZERS = ("adam", "sgd")
_LN_EPS = 1e-5


def _map(tree: Any, fn: Callable[[Any], Any]) -> Any:
    if isinstance(tree, dict):
        return {k: _map(v, fn) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_map(v, fn) for v in tree]
    return fn(tree)


def _leaves(tree: Any) -> list[torch.Tensor]:
    if isinstance(tree, dict):
        return [leaf for k in tree for leaf in _leaves(tree[k])]
    if isinstance(tree, list):
        return [leaf for v in tree for leaf in _leaves(v)]
    return [tree]


def vit_init(config: ViTConfig, seed: int, device: torch.device | str = "cpu", dtype: str = "float32") -> Params:
    """``backends.vit.VitInit`` in torch."""
    return _map(init_params(config, seed, dtype), lambda a: torch.from_numpy(a).to(device))


def dense_mlp(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """A block's MLP: ``gelu(x w1 + b1) w2 + b2`` (exact GELU), (B, T, width) -> (B, T, width)."""
    return F.gelu(x @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"]


def _layer_norm(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], params["scale"], params["bias"], eps=_LN_EPS)


def _patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, (H/p)(W/p), p p C), patches row-major, pixels (p1, p2, c) inside."""
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // patch) * (w // patch), patch * patch * c)


def vit_apply(
    params: Params, images: torch.Tensor, config: ViTConfig, mlp: MLP | None = None
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``backends.vit.VitApply`` in torch."""
    mlp = dense_mlp if mlp is None else mlp
    b = images.shape[0]
    x = _patchify(images, config.patch) @ params["embed"]["w"] + params["embed"]["b"]
    x = torch.cat([params["cls"].expand(b, 1, -1), x], dim=1) + params["pos"]
    maps = []
    for block in params["blocks"]:
        h = _layer_norm(block["ln1"], x)
        qkv = (h @ block["attn"]["wqkv"]).reshape(b, config.tokens, 3, config.heads, config.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        out, weights = attention(q, k, v, config.normalization, config.sinkhorn_iters, implicit=config.implicit)
        out = out.transpose(1, 2).reshape(b, config.tokens, config.heads * config.head_dim)
        x = x + out @ block["attn"]["wo"] + block["attn"]["bo"]
        if config.mlp_dim is not None:
            x = x + mlp(block["mlp"], _layer_norm(block["ln2"], x))
        maps.append(weights)
    logits = _layer_norm(params["head"]["ln"], x[:, 0]) @ params["head"]["w"] + params["head"]["b"]
    return logits, maps


class TorchViTTrainer:
    """Trains a ViT with Adam or SGD on cross-entropy; predicts and returns attention matrices."""

    def __init__(self, config: ViTConfig, params: Params, lr: float, optimizer: str, mlp: MLP | None):
        self.config, self.mlp = config, mlp
        self.params = _map(params, lambda t: t.detach().clone().requires_grad_(True))
        leaves = _leaves(self.params)
        self._opt = torch.optim.Adam(leaves, lr=lr) if optimizer == "adam" else torch.optim.SGD(leaves, lr=lr)

    def compile(self, images: torch.Tensor, labels: torch.Tensor, batch: int) -> None:
        """Nothing to compile in eager PyTorch (the JAX trainer compiles its epoch here)."""

    def fit_epoch(
        self, images: torch.Tensor, labels: torch.Tensor, order: np.ndarray, batch: int
    ) -> tuple[float, float]:
        """One pass over ``order`` in minibatches of ``batch`` (the last incomplete one dropped).

        Returns:
            the mean training loss and the running training accuracy over the epoch.
        """
        return classifier_epoch(
            lambda xb: vit_apply(self.params, xb, self.config, self.mlp)[0], self._opt, images, labels, order, batch
        )

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch: int = 500) -> np.ndarray:
        """Predicted class of every image, (N,) int64."""
        out = [
            vit_apply(self.params, images[i : i + batch], self.config, self.mlp)[0].argmax(-1)
            for i in range(0, images.shape[0], batch)
        ]
        return torch.cat(out).cpu().numpy()

    @torch.no_grad()
    def attention(self, images: torch.Tensor) -> list[np.ndarray]:
        """Attention matrices of every layer on ``images``, each (B, heads, tokens, tokens) float64."""
        _, maps = vit_apply(self.params, images, self.config, self.mlp)
        return [m.to(torch.float64).cpu().numpy() for m in maps]


def vit_trainer(
    config: ViTConfig, params: Params, lr: float, optimizer: str = "adam", mlp: MLP | None = None
) -> TorchViTTrainer:
    """``backends.vit.VitTrainer`` in torch; it trains a copy of ``params``."""
    check_trainer(lr, optimizer, OPTIMIZERS)
    return TorchViTTrainer(config, params, lr, optimizer, mlp)
