"""Momentum ResNets (eq. 4.2): backprop, and the exactly reversible memory-free backward.

The memory-free model holds x and v in int64 fixed point and multiplies v by gamma = n/d with
an information buffer (appendix 4.C; multi-word, see backends/fixed_point.py), so the backward
recovers every activation bit for bit from the output, the final velocity and the buffer,
recomputing each block once (eq. 4.3) and backpropagating with the formulas of appendix 4.E.

References: thesis chapter 4: eq. 4.2, 4.3, 4.17; sections 4.3.1, 4.3.2; appendices 4.C, 4.E.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from fractions import Fraction

import torch

from .. import fixed_point
from ._blocks import Family, Grads, deterministic, module_family
from ._fixed import dequantize, div_ratio_, mul_ratio_, out_of_range, quantize, scratch
from .adjoint import Record

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS, read at CUDA start


@dataclasses.dataclass(frozen=True)
class ExactSpec:
    """Numerics of the exact momentum step: gamma = n/d, f's coefficient, fixed point, buffer schedule."""

    gamma_n: int
    gamma_d: int
    coef: float
    frac_bits: int
    steps_per_word: int
    words: int

    @property
    def gamma(self) -> float:
        return self.gamma_n / self.gamma_d


def exact_spec(gamma: Fraction, depth: int, scale: float, frac_bits: int) -> ExactSpec:
    """The spec of ``depth`` momentum steps with gamma (in (0, 1]) and step h = ``scale``."""
    steps, words = fixed_point.buffer_schedule(gamma.numerator, gamma.denominator, depth)
    return ExactSpec(gamma.numerator, gamma.denominator, float(1 - gamma) * scale, frac_bits, steps, words)


def momentum_forward(fam: Family, gamma: float, coef: float, x: torch.Tensor, record: Record = None):
    """v_{n+1} = gamma v_n + coef f(x_n, theta_n), x_{n+1} = x_n + v_{n+1}, v_0 = 0 (eq. 4.2), in floats.

    Returns:
        (x_N, v_N); differentiable by autograd (the ``momentum`` model).
    """
    v = torch.zeros_like(x)
    if record:
        record(0, x)
    for k in range(len(fam)):
        v = gamma * v + coef * fam(k, x)
        x = x + v
        if record:
            record(k + 1, x)
    return x, v


def momentum_reverse(fam: Family, gamma: float, coef: float, x: torch.Tensor, v: torch.Tensor, record: Record = None):
    """Invert eq. 4.2 in floats by eq. 4.3 (division by gamma): rounding errors grow by 1/gamma a layer."""
    if gamma == 0:
        raise ValueError("gamma=0: the momentum step cannot be inverted (v_n is lost)")
    if record:
        record(len(fam), x)
    for k in reversed(range(len(fam))):
        x = x - v
        v = (v - coef * fam(k, x)) / gamma
        if record:
            record(k, x)
    return x, v


def exact_forward(fam: Family, spec: ExactSpec, x: torch.Tensor, record: Record = None):
    """Eq. 4.2 in int64 fixed point with the reversible multiplication by gamma.

    Returns:
        (X_N, V_N, buffer of shape (words, *x.shape)), all int64; OverflowError if some value
        left the fixed-point range (the format cannot hold the activations).
    """
    bits, dtype = spec.frac_bits, x.dtype
    big, bad = quantize(x, bits)
    vel = torch.zeros_like(big)
    buf = big.new_zeros((spec.words, *big.shape))
    work = scratch(big)
    if record:
        record(0, dequantize(big, bits, dtype))
    for k in range(len(fam)):  # in place: the integer state costs no allocation per layer
        inc, worse = quantize(fam(k, dequantize(big, bits, dtype)), bits, spec.coef)
        if spec.words:
            mul_ratio_(vel, buf[k // spec.steps_per_word], spec.gamma_n, spec.gamma_d, work)
        big.add_(vel.add_(inc))
        bad = bad | worse | out_of_range(vel) | out_of_range(big)
        if record:
            record(k + 1, dequantize(big, bits, dtype))
    if bool(bad):
        raise OverflowError(
            f"momentum fixed point: |x|, |v| or |(1-gamma) h f| reached 2**{fixed_point.VALUE_BITS - bits}"
            f" (frac_bits={bits}); lower frac_bits or the scale of the activations"
        )
    return big, vel, buf


def exact_reverse(
    fam: Family,
    spec: ExactSpec,
    big: torch.Tensor,
    vel: torch.Tensor,
    buf: torch.Tensor,
    dtype: torch.dtype,
    g: torch.Tensor | None = None,
    grads: Grads | None = None,
    record: Record = None,
):
    """Undo :func:`exact_forward` layer by layer (eq. 4.3), recomputing each block once.

    With a cotangent ``g`` of x_N, also backpropagate (appendix 4.E): with s = g_x + g_v,
    g_x += coef J_f^T s, g_v = gamma s, parameter gradients coef d_theta f^T s into ``grads``.
    ``big``, ``vel`` and ``buf`` are updated in place (the buffer ends empty).

    Returns:
        (X_0, V_0, buffer, gradient with respect to x_0 or None); V_0 and the buffer are zero
        when the reversal was exact.
    """
    bits = spec.frac_bits
    gx, gv = (None, None) if g is None else (g.clone(), torch.zeros_like(g))
    work = scratch(big)
    if record:
        record(len(fam), dequantize(big, bits, dtype))
    for k in reversed(range(len(fam))):
        big.sub_(vel)
        xf = dequantize(big, bits, dtype)
        if g is None:
            with torch.no_grad():
                out = fam(k, xf)
        else:
            xf.requires_grad_()
            with torch.enable_grad():
                out = fam(k, xf)
        vel.sub_(quantize(out.detach(), bits, spec.coef)[0])
        if spec.words:
            div_ratio_(vel, buf[k // spec.steps_per_word], spec.gamma_n, spec.gamma_d, work)
        if g is not None:
            total = gv.add_(gx)
            gx.add_(grads.vjp(out, xf, fam.sets[k], total * spec.coef))
            gv = total.mul_(spec.gamma)
        if record:
            record(k, xf.detach())
    return big, vel, buf, gx


class _MomentumExact(torch.autograd.Function):
    """Forward in fixed point keeping (X_N, V_N, buffer); backward by exact reversal."""

    @staticmethod
    def forward(ctx, fam: Family, spec: ExactSpec, x: torch.Tensor, *tensors: torch.Tensor):
        with torch.no_grad(), deterministic():
            big, vel, buf = exact_forward(fam, spec, x)
        ctx.fam, ctx.spec, ctx.tensors, ctx.dtype, ctx.done = fam, spec, tensors, x.dtype, False
        ctx.save_for_backward(big, vel, buf)
        return dequantize(big, spec.frac_bits, x.dtype)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        if ctx.done:
            raise RuntimeError("the exact momentum backward empties its buffer: it runs once per forward")
        ctx.done = True
        big, vel, buf = ctx.saved_tensors
        grads = Grads()
        with deterministic(), ctx.fam.recomputing():
            _, vel, buf, gx = exact_reverse(ctx.fam, ctx.spec, big, vel, buf, ctx.dtype, g, grads)
        if bool(vel.any()) or bool(buf.any()):
            raise RuntimeError(
                "momentum_reversible: the reversal did not return to v_0 = 0 and an empty buffer; "
                "a block gave different bits when recomputed (non-deterministic kernel?)"
            )
        return (None, None, gx, *grads.result(ctx.tensors))


def momentum_exact_apply(fam: Family, spec: ExactSpec, x: torch.Tensor) -> torch.Tensor:
    """The Momentum ResNet whose backward keeps no activation (``momentum_reversible``).

    Args:
        fam: the residual functions f(., theta_k), one set per layer.
        spec: gamma, coefficient of f, fixed-point format, buffer schedule (:func:`exact_spec`).
        x: input, (batch, width) or (batch, channels, size, size), float.

    Returns:
        x_N as a float tensor of x's dtype. Saved for backward: X_N, V_N and the buffer only.

    References: thesis eq. 4.2, 4.3, section 4.3.2, appendices 4.C and 4.E.
    """
    return _MomentumExact.apply(fam, spec, x, *fam.tensors())


class MomentumLayer(torch.nn.Sequential):
    """A torchvision residual layer whose same-shape blocks follow eq. 4.2 with f(x) = block(x) - x.

    Blocks with a ``downsample`` (they change the shape) run unchanged and restart v at 0; with
    gamma = 0 and backprop the layer computes exactly what the original layer did.
    """

    def __init__(self, blocks: torch.nn.Sequential, gamma: Fraction, memory_free: bool, frac_bits: int | None):
        super().__init__(*blocks)
        self.gamma, self.memory_free, self.frac_bits = gamma, memory_free, frac_bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        run: list[torch.nn.Module] = []
        for block in self:
            if getattr(block, "downsample", None) is not None:
                x, run = self._momentum(run, x), []
                x = block(x)
            else:
                run.append(block)
        return self._momentum(run, x)

    def _momentum(self, run: list[torch.nn.Module], x: torch.Tensor) -> torch.Tensor:
        if not run:
            return x
        fam = module_family(run)
        if not self.memory_free:
            return momentum_forward(fam, float(self.gamma), float(1 - self.gamma), x)[0]
        bits = fixed_point.frac_bits_for(str(x.dtype).removeprefix("torch."), self.frac_bits)
        return momentum_exact_apply(fam, exact_spec(self.gamma, len(run), 1.0, bits), x)


def to_momentum(
    model: torch.nn.Module, gamma: float | str = 0.9, *, memory_free: bool = True, frac_bits: int | None = None
) -> torch.nn.Module:
    """The Momentum ResNet counterpart of a torchvision ResNet, with the same parameters.

    Each of ``layer1`` ... ``layer4`` becomes a :class:`MomentumLayer`: its blocks keep their
    names and weights (the state dicts are interchangeable), and every block that keeps the
    shape is turned into a momentum step x, v <- x + v', v' = gamma v + (1 - gamma)(block(x) - x).

    Args:
        model: a torchvision ResNet (resnet18 ... resnet152); it is copied, not changed.
        gamma: momentum term in [0, 1] (a float or "n/d"); memory_free needs gamma > 0.
        memory_free: the exact memory-free backward (True) or plain backprop (False).
        frac_bits: fixed-point fractional bits (default by dtype, see backends/fixed_point.py).

    Returns:
        The converted copy.

    References: thesis section 4.3.1 ("Drop-in replacement"), section 4.5.2 (pre-trained models).
    """
    g = fixed_point.ratio(gamma)
    if memory_free and g == 0:
        raise ValueError(f"gamma={gamma!r}: the memory-free backward needs gamma in (0, 1]")
    layers = [
        n for n in ("layer1", "layer2", "layer3", "layer4") if isinstance(getattr(model, n, None), torch.nn.Sequential)
    ]
    if not layers:
        raise ValueError(
            f"to_momentum: {type(model).__name__} has no layer1 ... layer4 of residual blocks; "
            "give a torchvision ResNet (resnet18 ... resnet152)"
        )
    out = copy.deepcopy(model)
    for name in layers:
        setattr(out, name, MomentumLayer(getattr(out, name), g, memory_free, frac_bits))
    return out
