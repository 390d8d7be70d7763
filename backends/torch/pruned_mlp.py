"""The pruned MLP of thesis section 7.6 in torch: W_i = topkmag(W'_i), hard or relaxed, and its SGD trainer.

Functional like ``vit.py``: weights from ``backends.pruned_mlp`` (the same seed gives the same
weights as ``backends/jax/pruned_mlp.py``); the pruning is ``topk.py``'s operators on each
flattened weight matrix, so the relaxed one back-propagates through its closed-form Jacobian.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from backends.pruned_mlp import PrunedMLPConfig, init_params, pruned_weights

from ._train import classifier_epoch
from .topk import hard_topk_mag, topk_mag
from .vit import _leaves, _map

Params = dict[str, Any]


def pruned_mlp_init(
    config: PrunedMLPConfig, seed: int, device: torch.device | str = "cpu", dtype: str = "float32"
) -> Params:
    """``backends.pruned_mlp.PrunedMlpInit`` in torch."""
    return _map(init_params(config, seed, dtype), lambda a: torch.from_numpy(a).to(device))


def pruned_mlp_weights(params: Params, config: PrunedMLPConfig) -> list[torch.Tensor]:
    """``backends.pruned_mlp.PrunedMlpWeights`` in torch."""
    return pruned_weights(params["w"], config, topk_mag, hard_topk_mag)


def pruned_mlp_apply(params: Params, x: torch.Tensor, config: PrunedMLPConfig) -> torch.Tensor:
    """``backends.pruned_mlp.PrunedMlpApply`` in torch."""
    h = x.reshape(x.shape[0], -1)
    weights = pruned_mlp_weights(params, config)
    for i, (w, b) in enumerate(zip(weights, params["b"])):
        h = h @ w + b
        if i < len(weights) - 1:
            h = torch.relu(h)
    return h


class TorchPrunedMLPTrainer:
    """Trains W'_i, b_i with plain SGD on cross-entropy through the pruning operator."""

    def __init__(self, config: PrunedMLPConfig, params: Params, lr: float):
        self.config = config
        self.params = _map(params, lambda t: t.detach().clone().requires_grad_(True))
        self._opt = torch.optim.SGD(_leaves(self.params), lr=lr)

    def compile(self, x: torch.Tensor, y: torch.Tensor, batch: int, steps: int | None = None) -> None:
        """Nothing to compile in eager PyTorch (the JAX trainer compiles its pass of ``steps`` minibatches here)."""

    def fit_epoch(self, x: torch.Tensor, y: torch.Tensor, order: np.ndarray, batch: int) -> tuple[float, float]:
        """One SGD step per minibatch of ``batch`` indices of ``order`` (the last incomplete one dropped).

        ``order`` may be an epoch's permutation or any stream of indices (several epochs, part of one).

        Returns:
            The mean training loss and the running training accuracy over the pass.
        """
        return classifier_epoch(
            lambda xb: pruned_mlp_apply(self.params, xb, self.config), self._opt, x, y, order, batch
        )

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch: int = 1024) -> np.ndarray:
        """Predicted class of every example, (N,) int64."""
        out = [
            pruned_mlp_apply(self.params, x[i : i + batch], self.config).argmax(-1) for i in range(0, x.shape[0], batch)
        ]
        return torch.cat(out).cpu().numpy()

    @torch.no_grad()
    def weights(self) -> list[np.ndarray]:
        """The effective (pruned) weight matrices, float64 (in, out) each."""
        return [w.to(torch.float64).cpu().numpy() for w in pruned_mlp_weights(self.params, self.config)]


def pruned_mlp_trainer(config: PrunedMLPConfig, params: Params, lr: float) -> TorchPrunedMLPTrainer:
    """``backends.pruned_mlp.PrunedMlpTrainer`` in torch; it trains a copy of ``params``."""
    if not lr > 0:
        raise ValueError(f"lr={lr!r}: expected > 0")
    return TorchPrunedMLPTrainer(config, params, lr)
