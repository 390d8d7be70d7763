"""Residual networks of the memory issue in torch: one constructor, seven ways to get a gradient.

``residual_net`` builds resnet, checkpoint, momentum, momentum_reversible, adjoint_euler,
adjoint_heun or revnet from the same arguments as the JAX backend (weights from the shared NumPy
initialiser), or a torchvision ResNet (and its ``to_momentum`` conversion). The other operators
run it (``residual_apply``), differentiate it (``residual_vjp``), expose the activations of the
forward and of the backward's reconstruction (``residual_trajectory``, ``residual_reconstruct``)
and the functions the memory meters take (``residual_functional``).

References: thesis eq. 2.1, 2.6-2.9 (section 2.4), eq. 4.2-4.4, 4.17, appendix 4.C.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from typing import Any

import numpy as np
import torch
from torch.utils.checkpoint import checkpoint

from backends.resnets import (
    TORCHVISION,
    ResidualConfig,
    block_shapes,
    check_every,
    check_input,
    init_params,
    net_config,
    with_weights,
)

from ._blocks import Family, block_family
from .adjoint import adjoint_apply, checkpoint_forward, euler_forward, euler_reverse, heun_forward, heun_reverse
from .momentum import exact_forward as momentum_exact_forward
from .momentum import exact_reverse as momentum_exact_reverse
from .momentum import exact_spec, momentum_exact_apply, momentum_forward, momentum_reverse, to_momentum
from .revnet import exact_forward as revnet_exact_forward
from .revnet import exact_reverse as revnet_exact_reverse
from .revnet import revnet_exact_apply, revnet_forward, revnet_reverse


class ResidualNet(torch.nn.Module):
    """A residual network of ``config`` (mlp or conv blocks) whose weights come from ``params``."""

    def __init__(self, config: ResidualConfig, params: dict[str, np.ndarray], device: torch.device):
        super().__init__()
        self.config = config
        self.sets = torch.nn.ModuleDict()
        for fam in config.families:
            names = [f"{fam}.{k}" if fam else k for k in block_shapes(config)]
            count = 1 if config.tied else config.sets
            self.sets[fam or "f"] = torch.nn.ModuleList(
                [
                    torch.nn.ParameterList(
                        [
                            torch.nn.Parameter(torch.from_numpy(params[n] if config.tied else params[n][k]).to(device))
                            for n in names
                        ]
                    )
                    for k in range(count)
                ]
            )

    def family(self, name: str = "") -> Family:
        """The residual functions of family ``name`` ("" or, for a RevNet, "phi" / "psi")."""
        lists = [list(pl) for pl in self.sets[name or "f"]]
        sets = lists * self.config.sets if self.config.tied else lists
        return block_family(sets, self.config.block, self.config.activation)

    def groups(self) -> list[tuple[str, list[torch.Tensor]]]:
        """(parameter name, its tensor per set) in the order of ``param_names``."""
        out = []
        for fam in self.config.families:
            lists = [list(pl) for pl in self.sets[fam or "f"]]
            for j, k in enumerate(block_shapes(self.config)):
                out.append((f"{fam}.{k}" if fam else k, [ps[j] for ps in lists]))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        rule, backward = cfg.rule, cfg.backward
        if rule == "revnet":
            if backward == "backprop":
                return revnet_forward(self.family("phi"), self.family("psi"), cfg.scale, x)[0]
            return revnet_exact_apply(self.family("phi"), self.family("psi"), cfg.scale, cfg.frac_bits, x)
        fam = self.family()
        if rule == "momentum":
            if backward == "backprop":
                return momentum_forward(fam, cfg.gamma, cfg.coef, x)[0]
            return momentum_exact_apply(fam, _spec(cfg), x)
        if backward == "adjoint":
            return adjoint_apply(rule, fam, cfg.scale, x, cfg.tied)
        if backward == "checkpoint":
            return checkpoint_forward(fam, cfg.scale, x)
        return (euler_forward if rule == "euler" else heun_forward)(fam, cfg.scale, x)


def _spec(cfg: ResidualConfig):
    return exact_spec(Fraction(cfg.gamma_n, cfg.gamma_d), cfg.depth, cfg.scale, cfg.frac_bits)


class _CheckpointLayer(torch.nn.Sequential):
    """A torchvision layer whose blocks are each checkpointed (only block inputs are kept)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self:
            x = checkpoint(block, x, use_reentrant=False)
        return x


def _torchvision_net(
    model: str,
    block: str,
    gamma: float | str | None,
    frac_bits: int | None,
    backprop: bool,
    seed: int,
    dtype: str,
    device: Any,
) -> torch.nn.Module:
    import torchvision

    if model not in ("resnet", "checkpoint", "momentum", "momentum_reversible"):
        raise ValueError(
            f"model={model!r} with block={block!r}: a torchvision ResNet runs as resnet, checkpoint, "
            "momentum or momentum_reversible"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = getattr(torchvision.models, block)(weights=None)
    if model in ("momentum", "momentum_reversible"):
        net = to_momentum(
            net,
            0.9 if gamma is None else gamma,
            memory_free=model == "momentum_reversible" and not backprop,
            frac_bits=frac_bits,
        )
    elif model == "checkpoint" and not backprop:
        for name in ("layer1", "layer2", "layer3", "layer4"):
            setattr(net, name, _CheckpointLayer(*getattr(net, name)))
    return net.to(device=device, dtype=getattr(torch, dtype))


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
) -> torch.nn.Module:
    """``backends.resnets.ResidualNet`` in torch: a ``ResidualNet`` module, or for a torchvision block (resnet18 ...
    resnet152) the torchvision model (its own depth and width; gamma defaults to 0.9 there), converted by
    ``to_momentum`` for the momentum models."""
    config = None if block in TORCHVISION else net_config(locals())
    if config is None:
        if weights:
            raise ValueError("weights: a torchvision net takes its own weights (load a state dict)")
        return _torchvision_net(model, block, gamma, frac_bits, backprop, seed, dtype, device)
    return ResidualNet(config, with_weights(config, init_params(config, seed), weights), torch.device(device))


def residual_apply(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The network's output on ``x``; its backward is the model's (stored, recomputed or reversed)."""
    _check_input(net, x)
    return net(x)


def _check_input(net: torch.nn.Module, x: torch.Tensor) -> None:
    if isinstance(net, ResidualNet):
        check_input(net.config, tuple(x.shape), str(x.dtype).removeprefix("torch."))


def _groups(net: torch.nn.Module) -> list[tuple[str, list[torch.Tensor]]]:
    if isinstance(net, ResidualNet):
        return net.groups()
    return [(n, [p]) for n, p in net.named_parameters()]


def residual_vjp(net: torch.nn.Module, x: torch.Tensor, cotangent: torch.Tensor) -> dict[str, torch.Tensor]:
    """Gradients of <net(x), cotangent> by the model's own backward.

    Returns:
        Parameter name -> gradient (untied per-layer tensors stacked along a leading depth axis,
        as the JAX backend holds them), and "input" -> gradient with respect to x.
    """
    _check_input(net, x)
    groups = _groups(net)
    tensors = [t for _, ts in groups for t in ts]
    leaf = x.detach().requires_grad_()
    grads = torch.autograd.grad(net(leaf), [leaf, *tensors], cotangent, allow_unused=True)
    out, i = {}, 1
    for name, ts in groups:
        gs = [g if g is not None else torch.zeros_like(t) for g, t in zip(grads[i : i + len(ts)], ts)]
        out[name] = gs[0] if len(gs) == 1 and (not isinstance(net, ResidualNet) or net.config.tied) else torch.stack(gs)
        i += len(ts)
    out["input"] = grads[0]
    return out


def residual_functional(net: torch.nn.Module) -> tuple[Callable, Callable, list[torch.Tensor]]:
    """(forward(params, x), step(params, x, cotangent), params) for the memory meters and the timer.

    ``step`` is one forward and backward, returning the gradients of the parameters and of x.
    """
    params = [p for p in net.parameters() if p.requires_grad]

    def forward(params: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return net(x)

    def step(params: list[torch.Tensor], x: torch.Tensor, cotangent: torch.Tensor) -> tuple[torch.Tensor, ...]:
        leaf = x.detach().requires_grad_()
        return torch.autograd.grad(net(leaf), [*params, leaf], cotangent)

    return forward, step, params


def _keep(every: int):
    check_every(every)
    kept: dict[int, torch.Tensor] = {}

    def record(n: int, x: torch.Tensor) -> None:
        if n % every == 0:
            kept[n] = x.detach()

    return kept, record


def _stack(kept: dict[int, torch.Tensor]) -> torch.Tensor:
    return torch.stack([kept[n] for n in sorted(kept)])


def _needs_config(net: torch.nn.Module, what: str) -> ResidualConfig:
    if not isinstance(net, ResidualNet):
        raise ValueError(f"{what} needs a network from residual_net with block mlp or conv, not {type(net).__name__}")
    return net.config


@torch.no_grad()
def residual_trajectory(net: torch.nn.Module, x: torch.Tensor, every: int = 1) -> torch.Tensor:
    """``backends.resnets.ResidualTrajectory`` in torch."""
    cfg = _needs_config(net, "residual_trajectory")
    _check_input(net, x)
    kept, record = _keep(every)
    if cfg.rule == "revnet":
        phi, psi = net.family("phi"), net.family("psi")
        if cfg.fixed_point:
            revnet_exact_forward(phi, psi, cfg.scale, cfg.frac_bits, x, record)
        else:
            revnet_forward(phi, psi, cfg.scale, x, record)
    elif cfg.rule == "momentum":
        if cfg.fixed_point:
            momentum_exact_forward(net.family(), _spec(cfg), x, record)
        else:
            momentum_forward(net.family(), cfg.gamma, cfg.coef, x, record)
    else:
        (euler_forward if cfg.rule == "euler" else heun_forward)(net.family(), cfg.scale, x, record)
    return _stack(kept)


@torch.no_grad()
def residual_reconstruct(net: torch.nn.Module, x: torch.Tensor, every: int = 1) -> torch.Tensor:
    """``backends.resnets.ResidualReconstruct`` in torch."""
    cfg = _needs_config(net, "residual_reconstruct")
    _check_input(net, x)
    kept, record = _keep(every)
    if cfg.rule == "revnet":
        phi, psi = net.family("phi"), net.family("psi")
        if cfg.fixed_point:
            big, vel = revnet_exact_forward(phi, psi, cfg.scale, cfg.frac_bits, x)
            revnet_exact_reverse(phi, psi, cfg.scale, cfg.frac_bits, big, vel, x.dtype, record=record)
        else:
            revnet_reverse(phi, psi, cfg.scale, *revnet_forward(phi, psi, cfg.scale, x), record)
    elif cfg.rule == "momentum":
        fam = net.family()
        if cfg.fixed_point:
            momentum_exact_reverse(fam, _spec(cfg), *momentum_exact_forward(fam, _spec(cfg), x), x.dtype, record=record)
        else:
            momentum_reverse(fam, cfg.gamma, cfg.coef, *momentum_forward(fam, cfg.gamma, cfg.coef, x), record)
    elif cfg.rule == "euler":
        euler_reverse(net.family(), cfg.scale, euler_forward(net.family(), cfg.scale, x), record=record)
    else:
        heun_reverse(net.family(), cfg.scale, heun_forward(net.family(), cfg.scale, x), record=record)
    return _stack(kept)


__all__ = [
    "ResidualNet",
    "residual_apply",
    "residual_functional",
    "residual_net",
    "residual_reconstruct",
    "residual_trajectory",
    "residual_vjp",
]
