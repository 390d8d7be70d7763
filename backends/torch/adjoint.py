"""Euler and Heun ResNets and their adjoint backward: activations recovered by reversing the step.

The adjoint backward keeps only the output and walks the layers backwards, reconstructing
x_n ~ x_{n+1} - h f(x_{n+1}, theta_n) (eq. 2.6) or by reversing Heun's step (eq. 2.9), and uses
the reconstructed activations in the backpropagation formulas (eq. 2.7). The gradient is
approximate; its error shrinks with depth (Prop. 2.10, 2.12).

References: thesis section 2.4, eq. 2.1, 2.6-2.9.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.checkpoint import checkpoint

from ._blocks import Family, Grads, deterministic

Record = Callable[[int, torch.Tensor], None] | None
"""Called with (n, x_n) for each activation kept by a trajectory or a reconstruction."""


def euler_forward(fam: Family, scale: float, x: torch.Tensor, record: Record = None) -> torch.Tensor:
    """x_{n+1} = x_n + h f(x_n, theta_n) for n < len(fam) (eq. 2.1); differentiable by autograd."""
    if record:
        record(0, x)
    for k in range(len(fam)):
        x = x + scale * fam(k, x)
        if record:
            record(k + 1, x)
    return x


def checkpoint_forward(fam: Family, scale: float, x: torch.Tensor) -> torch.Tensor:
    """The Euler forward with each block checkpointed: only its input is kept, the rest recomputed."""
    for k in range(len(fam)):
        x = checkpoint(lambda x, k=k: x + scale * fam(k, x), x, use_reentrant=False)
    return x


def _heun_step(fam: Family, k: int, scale: float, x: torch.Tensor) -> torch.Tensor:
    a = fam(k, x)
    return x + (scale / 2) * (a + fam(k + 1, x + scale * a))


def heun_forward(fam: Family, scale: float, x: torch.Tensor, record: Record = None) -> torch.Tensor:
    """y_n = x_n + h f(x_n, theta_n), x_{n+1} = x_n + h/2 (f(x_n, theta_n) + f(y_n, theta_{n+1})) (eq. 2.8).

    ``fam`` has depth + 1 parameter sets.
    """
    if record:
        record(0, x)
    for k in range(len(fam) - 1):
        x = _heun_step(fam, k, scale, x)
        if record:
            record(k + 1, x)
    return x


def euler_reverse(
    fam: Family,
    scale: float,
    y: torch.Tensor,
    g: torch.Tensor | None = None,
    grads: Grads | None = None,
    record: Record = None,
    tied: bool = False,
):
    """Walk back from the output y by x~_n = x~_{n+1} - h f(x~_{n+1}, theta_n) (eq. 2.6).

    With a cotangent ``g``, also backpropagate through each step at the reconstructed x~_n
    (eq. 2.7), adding parameter gradients to ``grads``. With tied weights, f(x~_n, theta) from
    the vector-Jacobian product is reused to reconstruct x~_{n-1}.

    Returns:
        (x~_0, gradient with respect to x_0 or None).
    """
    xt, cached = y.detach(), None
    if record:
        record(len(fam), xt)
    for k in reversed(range(len(fam))):
        with torch.no_grad():
            prev = xt - scale * (cached if cached is not None else fam(k, xt))
        cached = None
        if g is not None:
            leaf = prev.detach().requires_grad_()
            with torch.enable_grad():
                out = fam(k, leaf)
            g = g + grads.vjp(out, leaf, fam.sets[k], g * scale)
            cached = out.detach() if tied else None
        xt = prev
        if record:
            record(k, xt)
    return xt, g


def heun_reverse(
    fam: Family,
    scale: float,
    y: torch.Tensor,
    g: torch.Tensor | None = None,
    grads: Grads | None = None,
    record: Record = None,
    tied: bool = False,
):
    """Walk back from y by reversing Heun's step (eq. 2.9), backpropagating through it with ``g``.

    Returns:
        (x~_0, gradient with respect to x_0 or None).
    """
    xt, depth = y.detach(), len(fam) - 1
    if record:
        record(depth, xt)
    for k in reversed(range(depth)):
        with torch.no_grad():
            a = fam(k + 1, xt)
            prev = xt - (scale / 2) * (a + fam(k, xt - scale * a))
        if g is not None:
            leaf = prev.detach().requires_grad_()
            with torch.enable_grad():
                out = _heun_step(fam, k, scale, leaf)
            g = grads.vjp(out, leaf, fam.sets[k] + fam.sets[k + 1], g)
        xt = prev
        if record:
            record(k, xt)
    return xt, g


class _Adjoint(torch.autograd.Function):
    """Forward without a graph, keep the output only; backward by the adjoint method (eq. 2.6-2.9)."""

    @staticmethod
    def forward(ctx, rule: str, fam: Family, scale: float, tied: bool, x: torch.Tensor, *tensors: torch.Tensor):
        with torch.no_grad(), deterministic():
            y = (euler_forward if rule == "euler" else heun_forward)(fam, scale, x)
        ctx.rule, ctx.fam, ctx.scale, ctx.tied, ctx.tensors = rule, fam, scale, tied, tensors
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (y,) = ctx.saved_tensors
        grads = Grads()
        reverse = euler_reverse if ctx.rule == "euler" else heun_reverse
        with deterministic(), ctx.fam.recomputing():
            _, gx = reverse(ctx.fam, ctx.scale, y, g, grads, tied=ctx.tied)
        return (None, None, None, None, gx, *grads.result(ctx.tensors))


def adjoint_apply(rule: str, fam: Family, scale: float, x: torch.Tensor, tied: bool = False) -> torch.Tensor:
    """The Euler (``rule='euler'``) or Heun ResNet whose backward is the adjoint method.

    Args:
        rule: "euler" (eq. 2.1, 2.6) or "heun" (eq. 2.8, 2.9).
        fam: the residual functions (depth sets, or depth + 1 for Heun).
        scale: the step h.
        x: input, (batch, width) or (batch, channels, size, size).
        tied: whether every set holds the same tensors (lets the backward reuse one evaluation).

    Returns:
        x_N, of x's shape; its backward stores no activation.
    """
    return _Adjoint.apply(rule, fam, scale, tied, x, *fam.tensors())
