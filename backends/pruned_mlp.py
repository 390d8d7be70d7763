"""The pruned MLP of thesis section 7.6 ("Weight pruning"): its configuration and shared NumPy weights.

x -> W_3 relu(W_2 relu(W_1 a + b_1) + b_2) + b_3 with each W_i = topkmag(W'_i): the learned W'_i
is pruned to its ``keep`` fraction of largest entries (by magnitude, over the whole matrix) by the
hard operator or the relaxed one of chapter 7 (regulariser lam/p ||y||_p^p), or not at all
(``dense``, the baseline of Fig. 7.5).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from core.backend import Array

OPERATORS = ("dense", "hard", "relaxed")


@dataclasses.dataclass(frozen=True)
class PrunedMLPConfig:
    """Layer widths (input, hidden..., classes), pruning operator, kept fraction, relaxation."""

    sizes: tuple[int, ...] = (64, 32, 32, 10)
    operator: str = "relaxed"
    keep: float = 0.10
    lam: float = 1e-4
    p: float = 2.0

    def __post_init__(self) -> None:
        if len(self.sizes) < 2 or any(not isinstance(s, (int, np.integer)) or s < 1 for s in self.sizes):
            raise ValueError(f"sizes={self.sizes!r} must be two or more integers >= 1")
        if self.operator not in OPERATORS:
            raise ValueError(f"operator={self.operator!r} is unknown; allowed: {', '.join(OPERATORS)}")
        if not 0 < self.keep <= 1:
            raise ValueError(f"keep={self.keep!r} must be in (0, 1]")

    def kept(self, layer: int) -> int:
        """k of layer ``layer``: ceil(keep x its number of weights)."""
        return max(1, math.ceil(self.keep * self.sizes[layer] * self.sizes[layer + 1]))


def init_params(config: PrunedMLPConfig, seed: int, dtype: str = "float32") -> dict[str, list[np.ndarray]]:
    """PyTorch's Linear default: weights and biases uniform on +-1/sqrt(fan_in).

    Returns:
        {"w": [(in, out) per layer, applied as a @ w], "b": [(out,) per layer]} of ``dtype``.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 9]))
    ws, bs = [], []
    for fan_in, fan_out in zip(config.sizes[:-1], config.sizes[1:]):
        bound = 1.0 / math.sqrt(fan_in)
        ws.append(rng.uniform(-bound, bound, (fan_in, fan_out)).astype(dtype))
        bs.append(rng.uniform(-bound, bound, (fan_out,)).astype(dtype))
    return {"w": ws, "b": bs}


def pruned_weights(
    weights: Sequence[Any], config: PrunedMLPConfig, topk_mag: Callable, hard_topk_mag: Callable
) -> list:
    """The effective weights W_i = topkmag(W'_i) of the backend's arrays ``weights`` (W'_i itself for ``dense``).

    Each (in, out) matrix is pruned as one row of in * out magnitudes to its ``config.kept(i)`` largest, by the
    backend's ``topk_mag`` (relaxed: ``lam``, ``p``) or ``hard_topk_mag``.

    References:
        Thesis section 7.6 (weight pruning), 7.4 (relaxed top-k in magnitude).
    """
    if config.operator == "dense":
        return list(weights)
    out = []
    for i, w in enumerate(weights):
        flat, k = w.reshape(1, -1), config.kept(i)
        pruned = hard_topk_mag(flat, k) if config.operator == "hard" else topk_mag(flat, k, lam=config.lam, p=config.p)
        out.append(pruned.reshape(w.shape))
    return out


class PrunedMlpInit(Protocol):
    """The initial weights W'_i, b_i of ``config`` from ``seed`` on ``device`` (``init_params``).

    Args:
        config: widths and pruning.
        seed: weights seed; the same seed gives the same weights in both backends.
        device: where the weights live (JAX: a jax.Device or a platform name such as ``cpu``).
        dtype: ``float32`` or ``float64``.

    Returns:
        {"w": [(in, out)], "b": [(out,)]} arrays.
    """

    def __call__(self, config: Any, seed: int, device: Any = "cpu", dtype: str = "float32") -> Any: ...


class PrunedMlpApply(Protocol):
    """Logits of the MLP with pruned weights.

    Args:
        params: {"w", "b"} from ``pruned_mlp_init``.
        x: (B, ...) inputs, flattened to (B, sizes[0]).
        config: widths and pruning.

    Returns:
        (B, sizes[-1]) logits.

    References:
        Thesis section 7.6, Fig. 7.5 (784-32-32-10 on MNIST; 64-32-32-10 on digits here).
    """

    def __call__(self, params: Any, x: Array, config: Any) -> Array: ...


class PrunedMlpWeights(Protocol):
    """The effective weights W_i = topkmag(W'_i) (W'_i itself for ``dense``), each (in, out).

    References:
        Thesis section 7.6 (weight pruning), 7.4 (relaxed top-k in magnitude).
    """

    def __call__(self, params: Any, config: Any) -> list[Array]: ...


class PrunedTrainerObject(Protocol):
    """What ``pruned_mlp_trainer`` returns: the framework's SGD loop behind one interface."""

    params: Any

    def compile(self, x: Array, y: Array, batch: int) -> None: ...

    def fit_epoch(self, x: Array, y: Array, order: Any, batch: int) -> tuple[float, float]: ...

    def predict(self, x: Array, batch: int = 1024) -> Any: ...

    def weights(self) -> list[Any]: ...


class PrunedMlpTrainer(Protocol):
    """A trainer (SGD, no momentum, constant ``lr``) of the pruned MLP from ``params``.

    Args:
        config: widths and pruning.
        params: initial weights (``pruned_mlp_init``); torch's trainer works on a copy (JAX arrays are immutable).
        lr: learning rate.

    Returns:
        An object with ``compile``, ``fit_epoch``, ``predict``, ``weights`` and ``params``.

    References:
        Thesis appendix 7.C.1 (SGD, batch 128, learning rate 1e-2, 30 MNIST epochs = 14,070 steps).
    """

    def __call__(self, config: Any, params: Any, lr: float) -> PrunedTrainerObject: ...


OPS: dict[str, type] = {
    "pruned_mlp_init": PrunedMlpInit,
    "pruned_mlp_apply": PrunedMlpApply,
    "pruned_mlp_weights": PrunedMlpWeights,
    "pruned_mlp_trainer": PrunedMlpTrainer,
}
"""Operator name -> its Protocol: ``backends.torch.<family>`` and ``backends.jax.<family>`` export each name."""
