"""Autoregressive in-context learning (thesis chapter 6) in torch: the Transformer, its trainer,
and L steps of gradient descent on the in-context loss (eq. 6.5), the baseline of Fig. 6.5.

Functional like ``vit.py``: the weights are a nested dict made from ``backends.ar_transformer`` (the same
seed gives the same weights as ``backends/jax/ar_transformer.py``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from backends.ar_transformer import ARConfig, init_params

from .vit import _leaves, _map

Params = dict[str, Any]
_LN_EPS = 1e-5


def ar_transformer_init(
    config: ARConfig, seed: int, device: torch.device | str = "cpu", dtype: str = "float32"
) -> Params:
    """``backends.ar_transformer.ArTransformerInit`` in torch."""
    return _map(init_params(config, seed, dtype), lambda a: torch.from_numpy(a).to(device))


def _norm(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], p["scale"], p["bias"], eps=_LN_EPS)


def ar_transformer_apply(params: Params, tokens: torch.Tensor, config: ARConfig) -> torch.Tensor:
    """``backends.ar_transformer.ArTransformerApply`` in torch."""
    x = tokens
    length = x.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=x.device).tril()
    scale = 1.0 / math.sqrt(config.width)
    for block in params["blocks"]:
        scores = (x @ block["wq"]) @ (x @ block["wk"]).transpose(1, 2) * scale
        if config.softmax:
            weights = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)
        else:
            weights = scores.masked_fill(~causal, 0.0)
        x = x + _norm(block["ln"], (weights @ (x @ block["wv"])) @ block["wo"])
        if config.mlp_dim is not None:
            mlp = block["mlp"]
            x = x + _norm(block["ln_mlp"], torch.relu(x @ mlp["w1"] + mlp["b1"]) @ mlp["w2"] + mlp["b2"])
    return x[..., : config.dim]


def _mse(pred: torch.Tensor, targets: torch.Tensor, start: int) -> torch.Tensor:
    return ((pred[:, start:] - targets[:, start:]) ** 2).mean()


class TorchARTrainer:
    """Trains the Transformer with Adam on the next-state mean squared error."""

    def __init__(self, config: ARConfig, params: Params, lr: float):
        self.config = config
        self.params = _map(params, lambda t: t.detach().clone().requires_grad_(True))
        self._opt = torch.optim.Adam(_leaves(self.params), lr=lr)

    def compile(self, tokens: torch.Tensor, targets: torch.Tensor, batch: int) -> None:
        """Nothing to compile in eager PyTorch (the JAX trainer compiles its epoch here)."""

    def fit_epoch(self, tokens: torch.Tensor, targets: torch.Tensor, order: np.ndarray, batch: int) -> float:
        """One pass over ``order`` in minibatches of ``batch`` (the last incomplete one dropped).

        Returns:
            The mean training loss over the epoch's minibatches.
        """
        n_batches = len(order) // batch
        if n_batches == 0:
            raise ValueError(f"batch={batch}: larger than the {len(order)} training sequences")
        idx = torch.as_tensor(np.asarray(order[: n_batches * batch]).reshape(n_batches, batch), device=tokens.device)
        losses = []
        for ib in idx:
            loss = _mse(ar_transformer_apply(self.params, tokens[ib], self.config), targets[ib], self.config.loss_start)
            self._opt.zero_grad(set_to_none=True)
            loss.backward()
            self._opt.step()
            losses.append(loss.detach())
        return float(torch.stack(losses).mean())

    @torch.no_grad()
    def predict(self, tokens: torch.Tensor, batch: int = 1024) -> np.ndarray:
        """Predictions (n, T, d) float64 of every sequence, ``batch`` sequences at a time."""
        out = [
            ar_transformer_apply(self.params, tokens[i : i + batch], self.config)
            for i in range(0, tokens.shape[0], batch)
        ]
        return torch.cat(out).to(torch.float64).cpu().numpy()


def ar_transformer_trainer(config: ARConfig, params: Params, lr: float) -> TorchARTrainer:
    """``backends.ar_transformer.ArTransformerTrainer`` in torch; it trains a copy of ``params``."""
    if not lr > 0:
        raise ValueError(f"lr={lr!r}: expected > 0")
    return TorchARTrainer(config, params, lr)


def _exclusive_cumsum(x: torch.Tensor) -> torch.Tensor:
    """sum_{j<t} x_j along axis 1 (zero at t = 0)."""
    return torch.cat([torch.zeros_like(x[:, :1]), torch.cumsum(x[:, :-1], dim=1)], dim=1)


def ar_gd_predict(states: torch.Tensor, steps: int, step_size: float) -> torch.Tensor:
    """``backends.ar_transformer.ArGdPredict`` in torch."""
    if steps < 0:
        raise ValueError(f"steps={steps} must be >= 0")
    s, nxt = states[:, :-1], states[:, 1:]
    outer = s.unsqueeze(-1) * s.unsqueeze(-2)  # (n, T, d, d): s_j s_j^T
    cross = nxt.unsqueeze(-1) * s.unsqueeze(-2)  # s_{j+1} s_j^T
    gram = _exclusive_cumsum(outer)  # j < t
    corr = _exclusive_cumsum(cross)
    w = torch.zeros_like(gram)
    for _ in range(steps):
        w = w - step_size * (w @ gram - corr)
    return (w @ s.unsqueeze(-1)).squeeze(-1)
