"""Autoregressive in-context learning (thesis chapter 6): data, augmented tokens, shared weights.

Sequences s_{t+1} = W s_t with W a random orthogonal matrix per sequence and s_1 = 1_d (section
6.3); augmented tokens e_t = (0, s_t, s_{t-1}) with s_0 = 0 (section 6.4). The Transformer of
section 6.6 ("Augmented setting") iterates eq. 6.4 with layer normalisation: one
``ARConfig`` describes it and ``init_params`` draws its weights with NumPy, so both backends start
from the same ones.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Protocol

import numpy as np

from core.backend import Array


@dataclasses.dataclass(frozen=True)
class ARConfig:
    """A causal Transformer on augmented tokens of width 3 d (section 6.6, Fig. 6.5 and 6.10).

    Each of the ``depth`` layers does e_t <- e_t + LN(W_O sum_{t' <= t} a_{t,t'} W_V e_{t'}) with
    a_{t,t'} = <W_Q e_t, W_K e_{t'}> / sqrt(3 d) (linear attention, eq. 6.4) or the causal softmax
    of these scores; with ``mlp_dim`` it then does e_t <- e_t + LN(MLP(e_t)) (ReLU). The prediction
    of s_{t+1} is the first d coordinates of e_t after the last layer. The loss and the test error
    count positions ``loss_start`` (0-based) onwards.
    """

    dim: int
    depth: int
    softmax: bool = False
    mlp_dim: int | None = None
    loss_start: int = 1

    def __post_init__(self) -> None:
        for name in ("dim", "depth"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name}={value!r} must be an integer >= 1")
        if self.mlp_dim is not None and (not isinstance(self.mlp_dim, (int, np.integer)) or self.mlp_dim < 1):
            raise ValueError(f"mlp_dim={self.mlp_dim!r} must be None or an integer >= 1")
        if self.loss_start < 0:
            raise ValueError(f"loss_start={self.loss_start} must be >= 0")

    @property
    def width(self) -> int:
        """Token width 3 d."""
        return 3 * self.dim


def init_params(config: ARConfig, seed: int, dtype: str = "float32") -> dict:
    """Initial weights: PyTorch's Linear default (uniform +-1/sqrt(fan_in)), norms scale 1, bias 0.

    Returns:
        {"blocks": [per layer {"wq", "wk", "wv", "wo": (D, D) applied as x @ w; "ln": {"scale",
        "bias": (D,)}; with an MLP also "mlp": {"w1": (D, mlp_dim), "b1", "w2": (mlp_dim, D),
        "b2"} and "ln_mlp"}]}, D = 3 d, float arrays of ``dtype``.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 6]))
    width = config.width

    def uniform(shape: tuple[int, ...], fan_in: int) -> np.ndarray:
        bound = 1.0 / math.sqrt(fan_in)
        return rng.uniform(-bound, bound, shape).astype(dtype)

    def norm() -> dict[str, np.ndarray]:
        return {"scale": np.ones(width, dtype), "bias": np.zeros(width, dtype)}

    blocks = []
    for _ in range(config.depth):
        block = {k: uniform((width, width), width) for k in ("wq", "wk", "wv", "wo")}
        block["ln"] = norm()
        if config.mlp_dim is not None:
            h = config.mlp_dim
            block["mlp"] = {
                "w1": uniform((width, h), width),
                "b1": uniform((h,), width),
                "w2": uniform((h, width), h),
                "b2": uniform((width,), h),
            }
            block["ln_mlp"] = norm()
        blocks.append(block)
    return {"blocks": blocks}


def random_orthogonal(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """n Haar-distributed orthogonal dim x dim matrices, (n, dim, dim) float64 (QR with sign fix)."""
    q, r = np.linalg.qr(rng.standard_normal((n, dim, dim)))
    signs = np.sign(np.diagonal(r, axis1=-2, axis2=-1))
    signs[signs == 0] = 1.0
    return q * signs[:, None, :]


def ar_sequences(n: int, dim: int, length: int, seed: int, stream: int = 0) -> np.ndarray:
    """States s_1 ... s_{length+1} of n sequences s_{t+1} = W s_t, s_1 = 1_d, W Haar orthogonal.

    Args:
        n: number of sequences (one W each).
        dim: d.
        length: T, the number of input tokens; one more state is generated as the last target.
        seed: the draw's seed.
        stream: tells apart independent draws from one seed (train 0, test 1).

    Returns:
        (n, T + 1, d) float64.

    References:
        Thesis section 6.3 (token encoding), section 6.6.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7, stream]))
    w = random_orthogonal(n, dim, rng)
    states = np.empty((n, length + 1, dim))
    states[:, 0] = 1.0
    for t in range(length):
        states[:, t + 1] = np.einsum("nij,nj->ni", w, states[:, t])
    return states


def augment(states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Augmented tokens e_t = (0, s_t, s_{t-1}) (s_0 = 0) for t = 1 ... T, and targets s_{t+1}.

    Args:
        states: (n, T + 1, d) from ``ar_sequences``.

    Returns:
        tokens (n, T, 3 d) and targets (n, T, d), float64.
    """
    s = states[:, :-1]
    prev = np.concatenate([np.zeros_like(s[:, :1]), s[:, :-1]], axis=1)
    return np.concatenate([np.zeros_like(s), s, prev], axis=-1), states[:, 1:]


class ArTransformerInit(Protocol):
    """The initial weights of ``config`` from ``seed`` on ``device`` (``backends.ar_transformer.init_params``).

    Args:
        config: the architecture.
        seed: weights seed; the same seed gives the same weights in both backends.
        device: where the weights live (JAX: a jax.Device or a platform name such as ``cpu``).
        dtype: ``float32`` or ``float64``.

    Returns:
        Nested dict of arrays (see ``init_params``).
    """

    def __call__(self, config: Any, seed: int, device: Any = "cpu", dtype: str = "float32") -> Any: ...


class ArTransformerApply(Protocol):
    """Predictions of s_{t+1} at every position: the first d coordinates after ``config.depth`` layers.

    Args:
        params: weights from ``ar_transformer_init``.
        tokens: (B, T, 3 d) augmented tokens (``backends.ar_transformer.augment``).
        config: the architecture (linear or softmax causal attention, optional MLP).

    Returns:
        (B, T, d) predictions.

    References:
        Thesis eq. 6.4 iterated with layer norm, section 6.6 (Fig. 6.5); softmax and MLP: Fig. 6.10.
    """

    def __call__(self, params: Any, tokens: Array, config: Any) -> Array: ...


class ArTrainerObject(Protocol):
    """What ``ar_transformer_trainer`` returns: the framework's training loop behind one interface."""

    params: Any

    def compile(self, tokens: Array, targets: Array, batch: int) -> None: ...

    def fit_epoch(self, tokens: Array, targets: Array, order: Any, batch: int) -> float: ...

    def predict(self, tokens: Array, batch: int = 1024) -> Any: ...


class ArTransformerTrainer(Protocol):
    """A trainer (Adam, PyTorch defaults) of the Transformer ``config`` from ``params``.

    Args:
        config: the architecture.
        params: initial weights (``ar_transformer_init``); torch's trainer works on a copy (JAX arrays are immutable).
        lr: Adam's learning rate, constant.

    Returns:
        An object with ``compile``, ``fit_epoch``, ``predict`` and ``params``.

    References:
        Thesis section 6.6 (Adam, learning rate 5e-3, 2,000 epochs).
    """

    def __call__(self, config: Any, params: Any, lr: float) -> ArTrainerObject: ...


class ArGdPredict(Protocol):
    """Predictions of s_{t+1} by ``steps`` steps of gradient descent on the in-context loss (6.5).

    At position t the context is the pairs (s_j, s_{j+1}), j < t; starting from W = 0, each step
    is W <- W - step_size (W S_t - C_t) with S_t = sum_{j<t} s_j s_j^T, C_t = sum_{j<t} s_{j+1} s_j^T
    (the gradient of 1/2 sum_{j<t} ||s_{j+1} - W s_j||^2), and the prediction is W s_t.

    Args:
        states: (n, T + 1, d) states s_1 ... s_{T+1} (``backends.ar_transformer.ar_sequences``).
        steps: number of gradient steps L (>= 0).
        step_size: the fixed step size.

    Returns:
        (n, T, d) predictions of s_2 ... s_{T+1}, the dtype of ``states``.

    References:
        Thesis eq. 6.5, Proposition 6.4, section 6.6 (Fig. 6.5).
    """

    def __call__(self, states: Array, steps: int, step_size: float) -> Array: ...


OPS: dict[str, type] = {
    "ar_transformer_init": ArTransformerInit,
    "ar_transformer_apply": ArTransformerApply,
    "ar_transformer_trainer": ArTransformerTrainer,
    "ar_gd_predict": ArGdPredict,
}
"""Operator name -> its Protocol: ``backends.torch.<family>`` and ``backends.jax.<family>`` export each name."""
