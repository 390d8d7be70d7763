"""The small image classifier of thesis section 2.5.2 ("Success at large depth"): config and shared weights.

A 5x5 conv to ``width`` channels, a norm and a ReLU, then N residual steps x + h f(x) (Euler,
eq. 2.1, or Heun, eq. 2.8, h = 1/N) whose f is the pre-activation basic block ending in a
zero-initialised norm (``conv_norm``), then global average pooling and a linear layer. Its
residual part is trained by backprop or by the adjoint backward (eq. 2.6, 2.9), which stores no
activation. Framework-free, so that both backends start from the same weights.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Protocol

import numpy as np

from backends.resnets import ResidualConfig, make_config
from backends.resnets import init_params as residual_init
from core.backend import Array

SCHEMES = ("euler", "heun")
BACKWARDS = ("adjoint", "backprop")
STEM_KERNEL = 5


@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
    """Forward scheme, how the residual part is differentiated, depth, channels and the images it takes.

    ``unroll`` (JAX only): unroll the depth loops. XLA:CPU ran a convolution inside a loop 10-25x
    slower than unrolled (a depth-8 training step: 400 ms rolled, 17 ms unrolled), but compile time
    grows with depth (the depth-32 HeunNet took over 10 minutes): for the CPU, not for a GPU.
    """

    scheme: str = "euler"
    backward: str = "adjoint"
    depth: int = 8
    width: int = 16
    activation: str = "relu"
    in_channels: int = 1
    image_size: int = 8
    classes: int = 10
    dtype: str = "float32"
    unroll: bool = False

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(f"scheme={self.scheme!r} is unknown; allowed: {', '.join(SCHEMES)}")
        if self.backward not in BACKWARDS:
            raise ValueError(f"backward={self.backward!r} is unknown; allowed: {', '.join(BACKWARDS)}")
        for field in ("in_channels", "classes"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field}={getattr(self, field)!r} must be >= 1")
        self.body()  # validates depth, width, activation, image_size and dtype

    def body(self) -> ResidualConfig:
        """The residual part: adjoint_euler or adjoint_heun, conv_norm blocks (``backprop`` for the reference)."""
        return dataclasses.replace(
            make_config(
                f"adjoint_{self.scheme}",
                depth=self.depth,
                width=self.width,
                block="conv_norm",
                activation=self.activation,
                image_size=self.image_size,
                backprop=self.backward == "backprop",
                dtype=self.dtype,
            ),
            unroll=self.unroll,
        )


def init_params(config: ClassifierConfig, seed: int) -> dict:
    """The classifier's initial weights, NumPy, the same for both backends.

    Stem and head weights and biases are uniform on +-1/sqrt(fan_in) (PyTorch's default), the stem
    norm's weight 1 and bias 0; the residual blocks are ``backends.resnets.init_params`` (their last
    norm's weight 0, so the residual part starts as the identity).

    Returns:
        {"stem.weight" (width, in_channels, 5, 5), "stem.bias", "stem_bn.weight", "stem_bn.bias",
        "head.weight" (classes, width), "head.bias", "body": name -> (sets, *shape)}, of ``config.dtype``.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 25]))
    stem_fan = config.in_channels * STEM_KERNEL**2

    def uniform(fan_in: int, shape: tuple[int, ...]) -> np.ndarray:
        bound = 1.0 / math.sqrt(fan_in)
        return rng.uniform(-bound, bound, shape).astype(config.dtype)

    d = config.width
    return {
        "stem.weight": uniform(stem_fan, (d, config.in_channels, STEM_KERNEL, STEM_KERNEL)),
        "stem.bias": uniform(stem_fan, (d,)),
        "stem_bn.weight": np.ones(d, config.dtype),
        "stem_bn.bias": np.zeros(d, config.dtype),
        "head.weight": uniform(d, (config.classes, d)),
        "head.bias": uniform(d, (config.classes,)),
        "body": residual_init(config.body(), seed),
    }


def cosine_lr(lr: float, epoch: int, epochs: int) -> float:
    """The learning rate of ``epoch`` (0-based) under cosine annealing from ``lr`` to 0 over ``epochs`` (appendix 2.B.1)."""
    return 0.5 * lr * (1.0 + math.cos(math.pi * epoch / epochs))


class ResidualClassifierInit(Protocol):
    """The initial weights of ``config`` from ``seed`` on ``device`` (``init_params``; same in both backends).

    Returns:
        {"stem.weight", "stem.bias", "stem_bn.weight", "stem_bn.bias", "head.weight", "head.bias",
        "body": name -> (sets, *shape)} arrays of ``config.dtype``.
    """

    def __call__(self, config: Any, seed: int, device: Any = "cpu") -> Any: ...


class ResidualClassifierApply(Protocol):
    """Logits of the classifier; its backward through the residual part is ``config.backward``'s.

    Args:
        params: from ``residual_classifier_init``.
        x: (B, in_channels, image_size, image_size) images.
        config: the network.

    Returns:
        (B, classes) logits.

    References:
        Thesis section 2.5.2 (5x5 conv to 16 channels, norm, ReLU, N pre-activation basic blocks).
    """

    def __call__(self, params: Any, x: Array, config: Any) -> Array: ...


class ClassifierTrainerObject(Protocol):
    """What ``residual_classifier_trainer`` returns: the framework's SGD-with-momentum loop behind one interface."""

    params: Any

    def compile(self, x: Array, y: Array, batch: int) -> None: ...

    def fit_epoch(self, x: Array, y: Array, order: Any, batch: int, lr: float) -> tuple[float, float]: ...

    def body_gradients(self, x: Array, y: Array, backward: str) -> dict[str, Any]:
        """Gradient of the mean cross-entropy on (x, y) w.r.t. the residual blocks' weights, at the current weights.

        Args:
            backward: ``adjoint`` (eq. 2.7, activations rebuilt by reversal) or ``backprop``.

        Returns:
            name -> (sets, *shape) float64 arrays, as ``params["body"]``.

        References:
            Thesis Fig. 2.3c (the adjoint's gradient against backprop's, per parameter tensor).
        """

    def predict(self, x: Array) -> Any: ...


class ResidualClassifierTrainer(Protocol):
    """A trainer of the classifier from ``params``: SGD with ``momentum`` and ``weight_decay``.

    Returns:
        An object with ``compile``, ``fit_epoch(x, y, order, batch, lr)``, ``body_gradients``, ``predict``
        and ``params``.

    References:
        Thesis appendix 2.B.1 (SGD, momentum 0.9, weight decay 5e-4, cosine learning rate).
    """

    def __call__(
        self, config: Any, params: Any, momentum: float = 0.9, weight_decay: float = 5e-4
    ) -> ClassifierTrainerObject: ...


OPS: dict[str, type] = {
    "residual_classifier_init": ResidualClassifierInit,
    "residual_classifier_apply": ResidualClassifierApply,
    "residual_classifier_trainer": ResidualClassifierTrainer,
}
"""Operator name -> its Protocol: ``backends.torch.<family>`` and ``backends.jax.<family>`` export each name."""
