"""The small ViT's configuration and its NumPy initial weights, shared by both backends.

The same ``(config, seed)`` gives the same weights in ``backends/torch/vit.py`` and
``backends/jax/vit.py``, so the two forwards can be compared. Framework-free on purpose.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Protocol

import numpy as np

from core.backend import Array

from .init import normal, uniform

NORMALIZATIONS = ("softmax", "sinkhorn")


@dataclasses.dataclass(frozen=True)
class ViTConfig:
    """A Vision Transformer with a class token, pre-norm blocks and softmax or Sinkhorn attention.

    ``mlp_dim=None`` drops the MLP of every block: the attention-only model of Fig. 5.2 (left) and
    Fig. 5.6 is ``ViTConfig(depth=1, heads=1, mlp_dim=None, ...)`` (see ``attention_only``).
    ``dim_head`` is each head's query/key/value width (None: ``width // heads``); the Sinkformers
    ViT uses 64 whatever the width, so its attention-only model (width 128) projects 128 -> 64
    -> 128 and scales scores by 1/sqrt(64). The MLP block's
    weights live under ``params["blocks"][i]["mlp"]`` and ``vit_apply`` takes the MLP function as
    an argument, so a mixture of experts can replace it without touching the attention.
    """

    image_size: int = 8
    channels: int = 1
    num_classes: int = 10
    patch: int = 2
    width: int = 64
    depth: int = 2
    heads: int = 4
    mlp_dim: int | None = 128
    dim_head: int | None = None
    normalization: str = "softmax"
    sinkhorn_iters: int = 3
    implicit: bool = False

    def __post_init__(self) -> None:
        for field in ("image_size", "channels", "num_classes", "patch", "width", "depth", "heads", "sinkhorn_iters"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ViTConfig.{field}={value!r}: expected an integer >= 1")
        if self.mlp_dim is not None and (not isinstance(self.mlp_dim, int) or self.mlp_dim < 1):
            raise ValueError(f"ViTConfig.mlp_dim={self.mlp_dim!r}: expected an integer >= 1 or None (no MLP)")
        if self.image_size % self.patch:
            sides = [p for p in range(1, self.image_size + 1) if self.image_size % p == 0]
            raise ValueError(
                f"ViTConfig.patch={self.patch}: must divide image_size={self.image_size}; "
                f"allowed: {', '.join(map(str, sides))}"
            )
        if self.dim_head is not None and (not isinstance(self.dim_head, int) or self.dim_head < 1):
            raise ValueError(f"ViTConfig.dim_head={self.dim_head!r}: expected an integer >= 1 or None (width // heads)")
        if self.dim_head is None and self.width % self.heads:
            raise ValueError(f"ViTConfig.heads={self.heads}: must divide width={self.width}")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"ViTConfig.normalization={self.normalization!r}: allowed {', '.join(NORMALIZATIONS)}")

    @classmethod
    def attention_only(cls, **kwargs: Any) -> ViTConfig:
        """One layer, one head, no MLP: the self-attention module alone (Fig. 5.6)."""
        return cls(**({"depth": 1, "heads": 1} | kwargs | {"mlp_dim": None}))

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch) ** 2

    @property
    def tokens(self) -> int:
        """Sequence length: the patches and the class token."""
        return self.num_patches + 1

    @property
    def patch_dim(self) -> int:
        return self.channels * self.patch * self.patch

    @property
    def head_dim(self) -> int:
        """Width of one head's queries, keys and values."""
        return self.dim_head or self.width // self.heads


def _linear(seed: int, fan_in: int, fan_out: int, dtype: str, bias: bool = True) -> dict[str, np.ndarray]:
    """PyTorch's nn.Linear initialisation, stored as (in, out) so that y = x @ w + b."""
    bound = 1.0 / math.sqrt(fan_in)
    out = {"w": uniform(seed, (fan_in, fan_out), bound=bound, dtype=dtype)}
    if bias:
        out["b"] = uniform(seed + 1, (fan_out,), bound=bound, dtype=dtype)
    return out


def _norm(width: int, dtype: str) -> dict[str, np.ndarray]:
    return {"scale": np.ones(width, dtype), "bias": np.zeros(width, dtype)}


def init_mlp(config: ViTConfig, seed: int, dtype: str = "float32") -> dict[str, np.ndarray]:
    """One block's MLP weights: width -> mlp_dim -> width."""
    up, down = (
        _linear(seed, config.width, config.mlp_dim, dtype),
        _linear(seed + 2, config.mlp_dim, config.width, dtype),
    )
    return {"w1": up["w"], "b1": up["b"], "w2": down["w"], "b2": down["b"]}


def init_params(config: ViTConfig, seed: int, dtype: str = "float32") -> dict[str, Any]:
    """Initial weights of the ViT as a nested dict of NumPy arrays (the same in both backends).

    Args:
        config: the architecture.
        seed: weights seed; tensor ``i`` draws from ``1000 * seed + 10 * i`` (and the next few).
        dtype: NumPy dtype name of every array.

    Returns:
        ``{"embed": {"w", "b"}, "cls": (width,), "pos": (tokens, width), "blocks": [{"ln1",
        "attn": {"wqkv", "wo", "bo"}, "ln2", "mlp"}...], "head": {"ln", "w", "b"}}``; linear weights
        are (in, out); class token and positions are N(0, 1) as in the Sinkformers ViT.

    References:
        Thesis section 5.6.4 (ViT), Fig. 5.6 (attention-only model).
    """
    base = 1000 * seed
    inner = config.heads * config.head_dim
    params: dict[str, Any] = {
        "embed": _linear(base, config.patch_dim, config.width, dtype),
        "cls": normal(base + 10, (config.width,), dtype=dtype),
        "pos": normal(base + 20, (config.tokens, config.width), dtype=dtype),
        "blocks": [],
    }
    for layer in range(config.depth):
        s = base + 100 * (layer + 1)
        block: dict[str, Any] = {
            "ln1": _norm(config.width, dtype),
            "attn": {
                "wqkv": _linear(s, config.width, 3 * inner, dtype, bias=False)["w"],
                "wo": _linear(s + 10, inner, config.width, dtype)["w"],
                "bo": _linear(s + 10, inner, config.width, dtype)["b"],
            },
        }
        if config.mlp_dim is not None:
            block["ln2"] = _norm(config.width, dtype)
            block["mlp"] = init_mlp(config, s + 20, dtype)
        params["blocks"].append(block)
    head = _linear(base + 30, config.width, config.num_classes, dtype)
    params["head"] = {"ln": _norm(config.width, dtype), "w": head["w"], "b": head["b"]}
    return params


def check_trainer(lr: float, optimizer: str, optimizers: tuple[str, ...]) -> None:
    """Check ``vit_trainer``'s learning rate (> 0) and optimizer (one of the backend's ``optimizers``)."""
    if optimizer not in optimizers:
        raise ValueError(f"optimizer={optimizer!r}: allowed {', '.join(optimizers)}")
    if not lr > 0:
        raise ValueError(f"lr={lr!r}: expected > 0")


class VitInit(Protocol):
    """The initial weights of ``config`` from ``seed`` on ``device`` (``backends.vit.init_params``).

    Args:
        config: the architecture.
        seed: weights seed; the same seed gives the same weights in both backends.
        device: where the weights live (JAX: a jax.Device or a platform name such as ``cpu``).
        dtype: ``float32`` or ``float64``.

    Returns:
        Nested dict of arrays (see ``init_params``); linear weights are (in, out).
    """

    def __call__(self, config: Any, seed: int, device: Any = "cpu", dtype: str = "float32") -> Any: ...


class VitApply(Protocol):
    """Logits of the ViT and the attention matrices of every layer.

    Args:
        params: weights from ``vit_init`` (or with each block's ``mlp`` entry replaced).
        images: (B, C, H, W) float, H = W = ``config.image_size``.
        config: the architecture; ``normalization`` and ``sinkhorn_iters`` pick the attention.
        mlp: the block MLP, ``mlp(block["mlp"], x)``; ``dense_mlp`` when None. Unused when
            ``config.mlp_dim`` is None (attention-only model).

    Returns:
        logits (B, num_classes) and one (B, heads, tokens, tokens) attention matrix per layer.

    References:
        Thesis section 5.6.4 (ViT, Sinkformer counterpart), Fig. 5.6 (attention-only model).
    """

    def __call__(self, params: Any, images: Array, config: Any, mlp: Any = None) -> tuple[Array, list[Array]]: ...


class VitTrainerObject(Protocol):
    """What ``vit_trainer`` returns: the framework's training loop behind one interface."""

    params: Any

    def compile(self, images: Array, labels: Array, batch: int) -> None: ...

    def fit_epoch(self, images: Array, labels: Array, order: Any, batch: int) -> tuple[float, float]: ...

    def predict(self, images: Array, batch: int = 500) -> Any: ...

    def attention(self, images: Array) -> list[Any]: ...


class VitTrainer(Protocol):
    """A trainer of the ViT ``config`` starting from ``params``, with Adam or plain SGD.

    Args:
        config: the architecture.
        params: initial weights (``vit_init``); torch's trainer works on a copy (JAX arrays are immutable).
        lr: learning rate, constant.
        optimizer: ``adam`` (PyTorch defaults: betas 0.9, 0.999, eps 1e-8) or ``sgd`` (no momentum).
        mlp: the block MLP (see ``vit_apply``).

    Returns:
        An object with ``compile``, ``fit_epoch``, ``predict``, ``attention`` and ``params``.

    References:
        Thesis appendix 5.C.4 (Adam, ViT and attention-only experiments).
    """

    def __call__(
        self, config: Any, params: Any, lr: float, optimizer: str = "adam", mlp: Any = None
    ) -> VitTrainerObject: ...


OPS: dict[str, type] = {
    "vit_init": VitInit,
    "vit_apply": VitApply,
    "vit_trainer": VitTrainer,
}
"""Operator name -> its Protocol: ``backends.torch.<family>`` and ``backends.jax.<family>`` export each name."""
