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

from backends.resnets import (
    TORCHVISION,
    ResidualConfig,
    check_every,
    check_input,
    init_params,
    net_config,
    param_names,
    with_weights,
)

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
    """``backends.resnets.ResidualNet`` in JAX: its config and its weights (stacked along depth unless tied).

    Raises:
        NotImplementedError: for a torchvision block (resnet18 ... resnet152), torch only.
    """
    if block in TORCHVISION:
        raise NotImplementedError(f"block={block!r}: torchvision ResNets exist in the torch backend only")
    config = net_config(locals())
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
    check_input(net.config, tuple(x.shape), str(x.dtype))


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
    """``backends.resnets.ResidualTrajectory`` in JAX."""
    _check_input(net, x)
    check_every(every)
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
    """``backends.resnets.ResidualReconstruct`` in JAX."""
    _check_input(net, x)
    check_every(every)
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
