"""Residual networks of the memory issue in JAX: one constructor, seven ways to get a gradient.

``residual_net`` builds resnet, checkpoint, momentum, momentum_reversible, adjoint_euler,
adjoint_heun or revnet from the same arguments as the torch backend (weights from the shared
NumPy initialiser). The network is a config (static under jit) and a dict of parameters,
stacked along a leading depth axis unless tied. The other operators run it, differentiate it,
expose the activations of the forward and of the backward's reconstruction, and the functions
the memory meters take. Torchvision ResNets exist in the torch backend only.

References: thesis eq. 2.1, 2.6-2.9 (section 2.4), eq. 4.2-4.4, 4.17, appendix 4.C.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from ..residual_config import TORCHVISION, ResidualConfig, init_params, make_config, param_names, with_weights
from ._blocks import family
from .adjoint import adjoint_apply, euler_forward, euler_reverse, heun_forward, heun_reverse
from .momentum import exact_forward as momentum_exact_forward
from .momentum import exact_reverse as momentum_exact_reverse
from .momentum import momentum_exact_apply, momentum_forward, momentum_reverse
from .revnet import exact_forward as revnet_exact_forward
from .revnet import exact_reverse as revnet_exact_reverse
from .revnet import revnet_exact_apply, revnet_forward, revnet_reverse


@dataclasses.dataclass(frozen=True)
class ResidualNet:
    """A residual network: ``config`` (hashable, static under jit) and ``params`` (name -> array)."""

    config: ResidualConfig
    params: dict[str, jax.Array]


def residual_net(
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
) -> ResidualNet:
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
        A ``ResidualNet``: its config and its weights (stacked along depth unless tied).

    Raises:
        NotImplementedError: for a torchvision block (resnet18 ... resnet152), torch only.
    """
    if block in TORCHVISION:
        raise NotImplementedError(f"block={block!r}: torchvision ResNets exist in the torch backend only")
    for field, value in (("depth", depth), ("width", width)):
        if value is None:
            raise ValueError(f"{field} is required for block={block!r}")
    config = make_config(
        model,
        depth=depth,
        width=width,
        hidden=hidden,
        block=block,
        activation=activation,
        tied=tied,
        gamma=gamma,
        scale=scale,
        frac_bits=frac_bits,
        image_size=image_size,
        backprop=backprop,
        dtype=dtype,
    )
    dev = jax.devices("cpu")[0] if device == "cpu" else device
    params = {k: jax.device_put(v, dev) for k, v in with_weights(config, init_params(config, seed), weights).items()}
    return ResidualNet(config, params)


def apply_config(cfg: ResidualConfig, params: dict[str, jax.Array], x: jax.Array) -> jax.Array:
    """x_N of the network ``cfg`` with weights ``params``; differentiable with the model's own backward."""
    rule, backward = cfg.rule, cfg.backward
    if rule == "revnet":
        phi, psi = family(cfg, params, "phi"), family(cfg, params, "psi")
        if backward == "backprop":
            return revnet_forward(cfg, phi, psi, x)[0]
        return revnet_exact_apply(cfg, phi, psi, x)
    ps = family(cfg, params)
    if rule == "momentum":
        return momentum_forward(cfg, ps, x)[0] if backward == "backprop" else momentum_exact_apply(cfg, ps, x)
    if backward == "adjoint":
        return adjoint_apply(cfg, ps, x)
    if rule == "heun":
        return heun_forward(cfg, ps, x)[0]
    return euler_forward(cfg, ps, x, checkpointed=backward == "checkpoint")[0]


def _check_input(net: ResidualNet, x: jax.Array) -> None:
    cfg = net.config
    expected = cfg.input_shape(x.shape[0] if x.ndim else 0)[1:]
    if tuple(x.shape[1:]) != expected or x.ndim != len(expected) + 1:
        raise ValueError(
            f"x has shape {tuple(x.shape)}; this {cfg.block} net takes (batch, {', '.join(map(str, expected))})"
        )
    if x.dtype != jnp.dtype(cfg.dtype):
        raise ValueError(f"x has dtype {x.dtype}; this net runs in {cfg.dtype}")


_apply_jit = jax.jit(apply_config, static_argnums=0)


def residual_apply(net: ResidualNet, x: jax.Array) -> jax.Array:
    """The network's output on ``x`` (jitted); its VJP is the model's (stored, recomputed or reversed)."""
    _check_input(net, x)
    return _apply_jit(net.config, net.params, x)


@functools.partial(jax.jit, static_argnums=0)
def _step(cfg: ResidualConfig, params: dict[str, jax.Array], x: jax.Array, cotangent: jax.Array):
    _, vjp = jax.vjp(functools.partial(apply_config, cfg), params, x)
    return vjp(cotangent)


def residual_vjp(net: ResidualNet, x: jax.Array, cotangent: jax.Array) -> dict[str, jax.Array]:
    """Gradients of <net(x), cotangent> by the model's own backward.

    Returns:
        Parameter name -> gradient (stacked along depth unless tied), and "input" -> gradient wrt x.
    """
    _check_input(net, x)
    gp, gx = _step(net.config, net.params, x, cotangent)
    return {**{k: gp[k] for k in param_names(net.config)}, "input": gx}


def residual_functional(net: ResidualNet) -> tuple[Callable, Callable, dict[str, jax.Array]]:
    """(forward(params, x), step(params, x, cotangent), params) for the memory meters and the timer.

    ``step`` is one jitted forward and backward, returning the gradients of the parameters and of x.
    """
    return functools.partial(apply_config, net.config), functools.partial(_step, net.config), net.params


def _check_every(every: int) -> None:
    if not isinstance(every, int) or every < 1:
        raise ValueError(f"every={every!r} must be an integer >= 1")


@functools.partial(jax.jit, static_argnums=(0, 3))
def _trajectory(cfg: ResidualConfig, params: dict[str, jax.Array], x: jax.Array, every: int) -> jax.Array:
    if cfg.rule == "revnet":
        phi, psi = family(cfg, params, "phi"), family(cfg, params, "psi")
        if cfg.fixed_point:
            return revnet_exact_forward(cfg, phi, psi, x, every)[-1]
        return revnet_forward(cfg, phi, psi, x, every)[-1]
    ps = family(cfg, params)
    if cfg.rule == "momentum":
        return (momentum_exact_forward if cfg.fixed_point else momentum_forward)(cfg, ps, x, every)[-1]
    return (euler_forward if cfg.rule == "euler" else heun_forward)(cfg, ps, x, every)[-1]


def residual_trajectory(net: ResidualNet, x: jax.Array, every: int = 1) -> jax.Array:
    """The forward activations x_n for n = 0, every, 2 every, ... <= depth (eq. 2.1, 2.8, 4.2, 4.4).

    Exact models report their fixed-point state (as floats); a RevNet reports x_n (not v_n).

    Returns:
        (count, *x.shape) with count = depth // every + 1.
    """
    _check_input(net, x)
    _check_every(every)
    return _trajectory(net.config, net.params, x, every)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _reconstruct(cfg: ResidualConfig, params: dict[str, jax.Array], x: jax.Array, every: int) -> jax.Array:
    if cfg.rule == "revnet":
        phi, psi = family(cfg, params, "phi"), family(cfg, params, "psi")
        if cfg.fixed_point:
            big, vel, _, _ = revnet_exact_forward(cfg, phi, psi, x)
            return revnet_exact_reverse(cfg, phi, psi, big, vel, every=every)[-1]
        y, v, _ = revnet_forward(cfg, phi, psi, x)
        return revnet_reverse(cfg, phi, psi, y, v, every)[-1]
    ps = family(cfg, params)
    if cfg.rule == "momentum":
        if cfg.fixed_point:
            big, vel, buf, _, _ = momentum_exact_forward(cfg, ps, x)
            return momentum_exact_reverse(cfg, ps, big, vel, buf, every=every)[-1]
        y, v, _ = momentum_forward(cfg, ps, x)
        return momentum_reverse(cfg, ps, y, v, every)[-1]
    if cfg.rule == "euler":
        return euler_reverse(cfg, ps, euler_forward(cfg, ps, x)[0], every=every)[-1]
    return heun_reverse(cfg, ps, heun_forward(cfg, ps, x)[0], every=every)[-1]


def residual_reconstruct(net: ResidualNet, x: jax.Array, every: int = 1) -> jax.Array:
    """The activations the model's reversal recovers from the output, as its backward does.

    Runs the forward keeping only the final state, then walks back: exact for
    momentum_reversible and revnet (fixed point), eq. 4.3 in floats for momentum (division by
    gamma), eq. 2.6 (Euler rule) or 2.9 (Heun rule) for the others.

    Returns:
        (count, *x.shape), x~_n for n = 0, every, ... <= depth, in increasing n.
    """
    _check_input(net, x)
    _check_every(every)
    return _reconstruct(net.config, net.params, x, every)


__all__ = [
    "ResidualNet",
    "residual_apply",
    "residual_functional",
    "residual_net",
    "residual_reconstruct",
    "residual_trajectory",
    "residual_vjp",
]
