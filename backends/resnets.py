"""What defines a residual network of the memory issue, validated once for both backends.

Both backends' ``residual_net`` build a :class:`ResidualConfig` here (so the same arguments give
the same errors) and draw the weights from :func:`init_params` (so the same seed gives the same
weights). The config is hashable: JAX uses it as a static argument.

References: thesis eq. 2.1 and 2.8 (Euler and Heun ResNets), 4.2 (Momentum ResNet),
4.4 (RevNet), section 2.4 (adjoint method), section 4.3.1 (exact reversal).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from fractions import Fraction
from typing import Any, Protocol

import numpy as np

from core.backend import Array

from . import fixed_point

MODELS = ("resnet", "checkpoint", "momentum", "momentum_reversible", "adjoint_euler", "adjoint_heun", "revnet")
"""Model names; each is a forward rule and a way to get the gradient (see RULE and BACKWARD)."""

RULE = {
    "resnet": "euler",
    "checkpoint": "euler",
    "adjoint_euler": "euler",
    "adjoint_heun": "heun",
    "momentum": "momentum",
    "momentum_reversible": "momentum",
    "revnet": "revnet",
}
"""The forward rule of each model: euler (eq. 2.1), heun (2.8), momentum (4.2), revnet (4.4)."""

BACKWARD = {
    "resnet": "backprop",
    "checkpoint": "checkpoint",
    "momentum": "backprop",
    "momentum_reversible": "exact",
    "revnet": "exact",
    "adjoint_euler": "adjoint",
    "adjoint_heun": "adjoint",
}
"""How the gradient is computed: backprop (activations stored), checkpoint (one per block),
exact (activations recomputed bit for bit from the output: fixed point, no storage),
adjoint (activations recomputed approximately by reversing the step, eq. 2.6 and 2.9)."""

BLOCKS = ("mlp", "conv", "conv_norm")
TORCHVISION = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
"""Residual functions: the MLP of Fig. 4.2, a pre-activation conv block, the same block ending
in a zero-initialised norm (the zero-residual initialisation of section 2.5.2), or a torchvision
ResNet (torch only; its depth is its own)."""
CONV_BLOCKS = ("conv", "conv_norm")

ACTIVATIONS = ("tanh", "relu", "gelu")
"""gelu is the exact (erf) form in both backends."""
DTYPES = ("float32", "float64")


@dataclasses.dataclass(frozen=True)
class ResidualConfig:
    """A validated residual network: architecture, forward rule, backward, numerics.

    ``gamma_n / gamma_d`` is the momentum term (momentum models), ``scale`` the step h that
    multiplies f, ``frac_bits`` the fixed-point format (exact models), ``steps_per_word`` and
    ``words`` the buffer schedule (momentum_reversible). ``unroll``: the JAX backend unrolls the
    Euler and Heun depth loops (XLA:CPU runs a convolution inside a loop 10-25x slower than
    unrolled; compile time grows with depth); torch ignores it.
    """

    model: str
    depth: int
    width: int
    hidden: int
    block: str
    activation: str
    tied: bool
    gamma_n: int
    gamma_d: int
    scale: float
    frac_bits: int
    image_size: int
    backprop: bool
    dtype: str
    steps_per_word: int
    words: int
    unroll: bool = False

    @property
    def rule(self) -> str:
        """Forward rule: euler, heun, momentum or revnet."""
        return RULE[self.model]

    @property
    def backward(self) -> str:
        """backprop, checkpoint, exact or adjoint (``backprop=True`` forces backprop)."""
        return "backprop" if self.backprop else BACKWARD[self.model]

    @property
    def gamma(self) -> float:
        """gamma as a float (the float models' multiplier)."""
        return self.gamma_n / self.gamma_d

    @property
    def coef(self) -> float:
        """What multiplies f in the velocity update: (1 - gamma) h (eq. 4.2 with step h)."""
        return (self.gamma_d - self.gamma_n) / self.gamma_d * self.scale

    @property
    def sets(self) -> int:
        """Parameter sets per family: depth (Euler, momentum, RevNet) or depth + 1 (Heun, eq. 2.8)."""
        return self.depth + 1 if self.rule == "heun" else self.depth

    @property
    def families(self) -> tuple[str, ...]:
        """Residual-function families: ("",) or, for a RevNet, ("phi", "psi") (eq. 4.4)."""
        return ("phi", "psi") if self.rule == "revnet" else ("",)

    @property
    def fixed_point(self) -> bool:
        """Whether the state is held in int64 fixed point (exactly reversible models)."""
        return self.backward == "exact"

    def input_shape(self, batch: int) -> tuple[int, ...]:
        """Shape of an input batch: (batch, width) or (batch, width, image_size, image_size)."""
        if self.block == "mlp":
            return (batch, self.width)
        return (batch, self.width, self.image_size, self.image_size)


def make_config(
    model: str,
    *,
    depth: int,
    width: int,
    hidden: int | None = None,
    block: str = "mlp",
    activation: str = "tanh",
    tied: bool = False,
    gamma: float | str | None = None,
    scale: float | None = None,
    frac_bits: int | None = None,
    image_size: int | None = None,
    backprop: bool = False,
    dtype: str = "float32",
) -> ResidualConfig:
    """Validate the constructor arguments of ``residual_net``; errors name the field and what is allowed.

    Args: as ``residual_net`` (see backends/signatures.py, ``ResidualNet``).

    Returns:
        The config; gamma defaults to 1 - 1/(50 depth) (Fig. 4.2), scale to 1/depth for the
        Euler and Heun rules (eq. 2.1, 2.8) and to 1 for momentum and RevNet (eq. 4.2, 4.4).
    """
    if model not in MODELS:
        raise ValueError(f"model={model!r} is unknown; allowed: {', '.join(MODELS)}")
    if block not in BLOCKS:
        raise ValueError(
            f"block={block!r} is not a block of this constructor; allowed: {', '.join(BLOCKS)}"
            f" (torchvision names {', '.join(TORCHVISION)} are built by the torch backend only)"
        )
    if not isinstance(depth, (int, np.integer)) or depth < 1:
        raise ValueError(f"depth={depth!r} must be an integer >= 1")
    if not isinstance(width, (int, np.integer)) or width < 1:
        raise ValueError(f"width={width!r} must be an integer >= 1")
    hidden = width if hidden is None else hidden
    if not isinstance(hidden, (int, np.integer)) or hidden < 1:
        raise ValueError(f"hidden={hidden!r} must be an integer >= 1")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation={activation!r} is unknown; allowed: {', '.join(ACTIVATIONS)}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is not supported; allowed: {', '.join(DTYPES)}")
    if block in CONV_BLOCKS:
        image_size = 8 if image_size is None else image_size
        if image_size < 1:
            raise ValueError(f"image_size={image_size} must be >= 1")
    else:
        image_size = 0
    rule = RULE[model]
    if rule == "momentum":
        g = fixed_point.default_gamma(depth) if gamma is None else fixed_point.ratio(gamma)
        if BACKWARD[model] == "exact" and not backprop and g == 0:
            raise ValueError(
                f"gamma={gamma!r}: momentum_reversible needs gamma in (0, 1]; "
                "gamma = 0 is a ResNet, whose step cannot be inverted (use model='resnet')"
            )
    else:
        g = Fraction(0)
    if scale is None:
        scale = 1.0 / depth if rule in ("euler", "heun") else 1.0
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale={scale!r} must be a positive finite float")
    exact = BACKWARD[model] == "exact" and not backprop
    bits = fixed_point.frac_bits_for(dtype, frac_bits) if exact else 0
    steps, words = (depth, 0)
    if exact and rule == "momentum":
        steps, words = fixed_point.buffer_schedule(g.numerator, g.denominator, depth)
    return ResidualConfig(
        model=model,
        depth=int(depth),
        width=int(width),
        hidden=int(hidden),
        block=block,
        activation=activation,
        tied=bool(tied),
        gamma_n=g.numerator,
        gamma_d=g.denominator,
        scale=float(scale),
        frac_bits=bits,
        image_size=int(image_size),
        backprop=bool(backprop),
        dtype=dtype,
        steps_per_word=steps,
        words=words,
    )


_NET_ARGS = (
    "model",
    "depth",
    "width",
    "hidden",
    "block",
    "activation",
    "tied",
    "gamma",
    "scale",
    "frac_bits",
    "image_size",
    "backprop",
    "dtype",
)


def net_config(args: Mapping[str, Any]) -> ResidualConfig:
    """The config of ``residual_net(**args)`` (pass its ``locals()`` on entry): depth and width are required here.

    Raises:
        ValueError: a missing depth or width, or any argument ``make_config`` rejects.
    """
    for field in ("depth", "width"):
        if args[field] is None:
            raise ValueError(f"{field} is required for block={args['block']!r}")
    return make_config(**{name: args[name] for name in _NET_ARGS})


def check_input(config: ResidualConfig, shape: tuple[int, ...], dtype: str) -> None:
    """Check an input batch of shape ``shape`` and dtype name ``dtype`` against the net ``config``."""
    expected = config.input_shape(shape[0] if shape else 0)[1:]
    if tuple(shape[1:]) != expected or len(shape) != len(expected) + 1:
        raise ValueError(
            f"x has shape {tuple(shape)}; this {config.block} net takes (batch, {', '.join(map(str, expected))})"
        )
    if dtype != config.dtype:
        raise ValueError(f"x has dtype {dtype}; this net runs in {config.dtype}")


def check_every(every: object) -> None:
    """Check the stride of ``residual_trajectory`` / ``residual_reconstruct``: an integer >= 1."""
    if not isinstance(every, int) or every < 1:
        raise ValueError(f"every={every!r} must be an integer >= 1")


def block_shapes(config: ResidualConfig) -> dict[str, tuple[int, ...]]:
    """Shapes of one residual function's parameters, in a fixed order (the order each backend's block takes).

    mlp: Linear(width -> hidden), activation, Linear(hidden -> width) (Fig. 4.2), on (batch, width).
    conv: pre-activation basic block, norm -> act -> conv3x3 -> norm -> act -> conv3x3
    (He et al. 2016b; thesis section 2.5.2, the adjoint experiments), on (batch, width, size, size); the norms
    use the batch's statistics and keep no running averages.
    conv_norm: the conv block followed by a third norm, whose weight starts at zero.
    """
    d, h = config.width, config.hidden
    if config.block == "mlp":
        return {"w1": (h, d), "b1": (h,), "w2": (d, h), "b2": (d,)}
    conv = {
        "bn1.weight": (d,),
        "bn1.bias": (d,),
        "conv1.weight": (h, d, 3, 3),
        "bn2.weight": (h,),
        "bn2.bias": (h,),
        "conv2.weight": (d, h, 3, 3),
    }
    return conv if config.block == "conv" else {**conv, "bn3.weight": (d,), "bn3.bias": (d,)}


def param_names(config: ResidualConfig) -> list[str]:
    """Names of the parameter tensors (``phi.`` / ``psi.`` prefixed for a RevNet)."""
    return [f"{fam}.{k}" if fam else k for fam in config.families for k in block_shapes(config)]


def init_params(config: ResidualConfig, seed: int) -> dict[str, np.ndarray]:
    """The network's initial weights, drawn with NumPy so both backends get the same ones.

    Linear and conv weights and biases are uniform on +-1/sqrt(fan_in) (PyTorch's default), norm
    weights 1 and biases 0, except ``bn3.weight`` of the conv_norm block: 0, so that f = 0 and the
    network starts as the identity (zero-residual initialisation, thesis section 2.5.2). Zeroing
    the weight of a norm followed by ReLU instead would stop every gradient of the block (relu'(0) = 0). Untied: one independent draw per parameter set, stacked along a
    leading axis of length ``config.sets``; tied: one draw shared by every layer.

    Returns:
        name -> float array of ``config.dtype``, shape ``(sets, *shape)`` or ``shape`` (tied).
    """
    out = {}
    lead = () if config.tied else (config.sets,)
    for index, name in enumerate(param_names(config)):
        shape = block_shapes(config)[name.split(".", 1)[1] if config.rule == "revnet" else name]
        if "bn" in name:
            one = name.endswith("weight") and not name.endswith("bn3.weight")
            value = np.ones(lead + shape) if one else np.zeros(lead + shape)
        else:
            fan_in = {"b1": config.width, "b2": config.hidden}.get(name[-2:]) or int(np.prod(shape[1:]))
            rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
            bound = 1.0 / math.sqrt(fan_in)
            value = rng.uniform(-bound, bound, lead + shape)
        out[name] = value.astype(config.dtype)
    return out


def with_weights(
    config: ResidualConfig, drawn: dict[str, np.ndarray], weights: dict[str, np.ndarray] | None
) -> dict[str, np.ndarray]:
    """``drawn`` with the arrays of ``weights`` put in (e.g. weights interpolated in depth, or zeros).

    Args:
        config: the network; drawn: from :func:`init_params`.
        weights: name -> array of the same shape as ``drawn[name]`` ((sets, ...) or, tied, the
            set's shape); names not given keep their draw.

    Returns:
        The merged weights, cast to ``config.dtype``.
    """
    if not weights:
        return drawn
    out = dict(drawn)
    for key, value in weights.items():
        if key not in drawn:
            raise ValueError(f"weights: unknown parameter {key!r}; allowed: {', '.join(drawn)}")
        value = np.asarray(value)
        if value.shape != drawn[key].shape:
            raise ValueError(f"weights[{key!r}] has shape {value.shape}; expected {drawn[key].shape}")
        out[key] = value.astype(config.dtype)
    return out


class ResidualNet(Protocol):
    """A residual network of the memory issue (thesis eq. 2.1, 2.8, 4.2, 4.4), weights from the shared initialiser.

    Args:
        model: resnet, checkpoint, momentum, momentum_reversible, adjoint_euler, adjoint_heun or revnet.
        depth: layers N >= 1; width: d (features of the mlp, channels of the conv block).
        hidden: hidden width of f (default: width); block: mlp, conv (or a torchvision name, torch).
        activation: tanh or relu; tied: one weight set for every layer.
        gamma: momentum term in [0, 1], a float or "n/d" (default 1 - 1/(50 depth), Fig. 4.2).
        scale: step h multiplying f (default 1/depth for the Euler and Heun rules, 1 otherwise).
        frac_bits: fixed-point fractional bits of the exact models (default by dtype).
        image_size: side of the conv block's images (default 8).
        backprop: plain autodiff through the same forward rule (floats), the gradient reference.
        weights: name -> NumPy array replacing the seeded draw (shapes as ``init_params``).
        seed: seed of the shared NumPy initialiser (same weights in both backends).
        dtype: float32 or float64; device: where the weights live.

    Returns:
        The network (torch: a module, or the torchvision model converted by ``to_momentum`` for a torchvision
        block; JAX: its config and its weights, stacked along depth unless tied).
    """

    def __call__(
        self,
        model: str,
        *,
        depth: int | None = None,
        width: int | None = None,
        hidden: int | None = None,
        block: str = "mlp",
        activation: str = "tanh",
        tied: bool = False,
        gamma: float | str | None = None,
        scale: float | None = None,
        frac_bits: int | None = None,
        image_size: int | None = None,
        backprop: bool = False,
        weights: dict[str, Any] | None = None,
        seed: int = 0,
        dtype: str = "float32",
        device: Any = "cpu",
    ) -> Any: ...


class ResidualApply(Protocol):
    """The network's output on x; its backward is the model's (stored, recomputed or reversed)."""

    def __call__(self, net: Any, x: Array) -> Array: ...


class ResidualVjp(Protocol):
    """Gradients of <net(x), cotangent>: parameter name -> array (stacked over depth unless tied), "input"."""

    def __call__(self, net: Any, x: Array, cotangent: Array) -> dict[str, Array]: ...


class ResidualFunctional(Protocol):
    """(forward(params, x), step(params, x, cotangent) -> gradients, params) for memory meters and timers."""

    def __call__(self, net: Any) -> tuple[Any, Any, Any]: ...


class ResidualTrajectory(Protocol):
    """The forward activations x_n for n = 0, every, 2 every, ... <= depth (eq. 2.1, 2.8, 4.2, 4.4).

    Exact models report their fixed-point state (as floats); a RevNet reports x_n (not v_n).

    Returns:
        (count, *x.shape) with count = depth // every + 1.
    """

    def __call__(self, net: Any, x: Array, every: int = 1) -> Array: ...


class ResidualReconstruct(Protocol):
    """The activations the model's reversal recovers from the output, as its backward does.

    Runs the forward keeping only the final state, then walks back: exact for
    momentum_reversible and revnet (fixed point), eq. 4.3 in floats for momentum (division by
    gamma), eq. 2.6 (Euler rule) or 2.9 (Heun rule) for the others.

    Returns:
        (count, *x.shape), x~_n for n = 0, every, ... <= depth, in increasing n.
    """

    def __call__(self, net: Any, x: Array, every: int = 1) -> Array: ...


OPS: dict[str, type] = {
    "residual_net": ResidualNet,
    "residual_apply": ResidualApply,
    "residual_vjp": ResidualVjp,
    "residual_functional": ResidualFunctional,
    "residual_trajectory": ResidualTrajectory,
    "residual_reconstruct": ResidualReconstruct,
}
"""Operator name -> its Protocol: ``backends.torch.<family>`` and ``backends.jax.<family>`` export each name."""
