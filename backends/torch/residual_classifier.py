"""The classifier of thesis section 2.5.2 in torch, trained by backprop or the adjoint backward (Fig. 2.4).

Functional like ``pruned_mlp.py``: weights from ``backends.residual_classifier`` (the same
seed gives the same weights as ``backends/jax/residual_classifier.py``), the residual blocks
stacked along depth as in the JAX backend. The residual part runs through ``adjoint.py``: its
backward either stores the activations (backprop) or rebuilds them by reversing the steps.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from backends.residual_classifier import STEM_KERNEL, ClassifierConfig, init_params
from backends.resnets import block_shapes

from ._blocks import batch_norm, block_family
from ._train import classifier_epoch
from .adjoint import adjoint_apply, euler_forward, heun_forward

Params = dict[str, Any]


def residual_classifier_init(config: ClassifierConfig, seed: int, device: torch.device | str = "cpu") -> Params:
    """``backends.residual_classifier.ResidualClassifierInit`` in torch."""
    drawn = init_params(config, seed)
    out = {k: torch.from_numpy(v).to(device) for k, v in drawn.items() if k != "body"}
    out["body"] = {k: torch.from_numpy(v).to(device) for k, v in drawn["body"].items()}
    return out


def _body(config: ClassifierConfig, body: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    cfg = config.body()
    per_set = [body[name].unbind(0) for name in block_shapes(cfg)]  # one stack in the backward, not one per set
    fam = block_family([list(ps) for ps in zip(*per_set)], cfg.block, cfg.activation)
    if cfg.backward == "adjoint":
        return adjoint_apply(cfg.rule, fam, cfg.scale, x)
    return (euler_forward if cfg.rule == "euler" else heun_forward)(fam, cfg.scale, x)


def residual_classifier_apply(params: Params, x: torch.Tensor, config: ClassifierConfig) -> torch.Tensor:
    """``backends.residual_classifier.ResidualClassifierApply`` in torch."""
    h = F.conv2d(x, params["stem.weight"], params["stem.bias"], padding=STEM_KERNEL // 2)
    h = torch.relu(batch_norm(h, params["stem_bn.weight"], params["stem_bn.bias"]))
    h = _body(config, params["body"], h)
    return F.linear(h.mean(dim=(2, 3)), params["head.weight"], params["head.bias"])


def _leaves(params: Params) -> list[torch.Tensor]:
    return [v for k, v in params.items() if k != "body"] + list(params["body"].values())


class TorchResidualClassifierTrainer:
    """SGD with momentum and weight decay (``torch.optim.SGD``) on cross-entropy; the lr is set per epoch."""

    def __init__(self, config: ClassifierConfig, params: Params, momentum: float, weight_decay: float):
        self.config = config
        self.params = {
            k: (
                v.detach().clone().requires_grad_(True)
                if k != "body"
                else {n: t.detach().clone().requires_grad_(True) for n, t in v.items()}
            )
            for k, v in params.items()
        }
        self._opt = torch.optim.SGD(_leaves(self.params), lr=0.0, momentum=momentum, weight_decay=weight_decay)

    def compile(self, x: torch.Tensor, y: torch.Tensor, batch: int) -> None:
        """Nothing to compile in eager PyTorch (the JAX trainer compiles its step here)."""

    def fit_epoch(
        self, x: torch.Tensor, y: torch.Tensor, order: np.ndarray, batch: int, lr: float
    ) -> tuple[float, float]:
        """One pass over ``order`` in minibatches of ``batch`` (the last incomplete one dropped) at learning rate ``lr``.

        Returns:
            The mean training loss and the running training accuracy over the epoch.
        """
        for group in self._opt.param_groups:
            group["lr"] = lr
        return classifier_epoch(
            lambda xb: residual_classifier_apply(self.params, xb, self.config), self._opt, x, y, order, batch
        )

    def body_gradients(self, x: torch.Tensor, y: torch.Tensor, backward: str) -> dict[str, np.ndarray]:
        """The residual blocks' weight gradients by ``backward`` (see ``backends.signatures``)."""
        config = dataclasses.replace(self.config, backward=backward)
        loss = F.cross_entropy(residual_classifier_apply(self.params, x, config), y)
        grads = torch.autograd.grad(loss, list(self.params["body"].values()))
        return {k: g.detach().cpu().double().numpy() for k, g in zip(self.params["body"], grads)}

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> np.ndarray:
        """Predicted class of every example, (N,) int64; the norms use the statistics of ``x`` as one batch."""
        return residual_classifier_apply(self.params, x, self.config).argmax(-1).cpu().numpy()


def residual_classifier_trainer(
    config: ClassifierConfig, params: Params, momentum: float = 0.9, weight_decay: float = 5e-4
) -> TorchResidualClassifierTrainer:
    """``backends.residual_classifier.ResidualClassifierTrainer`` in torch; it trains a copy of ``params``."""
    return TorchResidualClassifierTrainer(config, params, momentum, weight_decay)
