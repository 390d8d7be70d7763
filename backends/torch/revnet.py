"""RevNet (eq. 4.4): v_{n+1} = v_n + h phi(x_n), x_{n+1} = x_n + h psi(v_{n+1}), x_0 = v_0 = input.

The memory-free version holds x and v in int64 fixed point: additions are exact there, so the
backward recovers every activation bit for bit (no buffer needed: nothing is multiplied).

References: thesis eq. 4.4 (Gomez et al. 2017), section 4.3.3, section 4.5.3 (activations duplicated).
"""

from __future__ import annotations

import torch

from .. import fixed_point
from ._blocks import Family, Grads, deterministic
from ._fixed import dequantize, out_of_range, quantize
from .adjoint import Record


def revnet_forward(phi: Family, psi: Family, scale: float, x: torch.Tensor, record: Record = None):
    """Eq. 4.4 in floats, differentiable by autograd; returns (x_N, v_N)."""
    v = x
    if record:
        record(0, x)
    for k in range(len(phi)):
        v = v + scale * phi(k, x)
        x = x + scale * psi(k, v)
        if record:
            record(k + 1, x)
    return x, v


def revnet_reverse(phi: Family, psi: Family, scale: float, x: torch.Tensor, v: torch.Tensor, record: Record = None):
    """Invert eq. 4.4 in floats (x_n = x_{n+1} - h psi(v_{n+1}), v_n = v_{n+1} - h phi(x_n))."""
    if record:
        record(len(phi), x)
    for k in reversed(range(len(phi))):
        x = x - scale * psi(k, v)
        v = v - scale * phi(k, x)
        if record:
            record(k, x)
    return x, v


def exact_forward(phi: Family, psi: Family, scale: float, bits: int, x: torch.Tensor, record: Record = None):
    """Eq. 4.4 in int64 fixed point; returns (X_N, V_N); OverflowError if a value left the range."""
    dtype = x.dtype
    big, bad = quantize(x, bits)
    vel = big.clone()
    if record:
        record(0, dequantize(big, bits, dtype))
    for k in range(len(phi)):
        inc, worse = quantize(phi(k, dequantize(big, bits, dtype)), bits, scale)
        vel.add_(inc)
        inc2, worse2 = quantize(psi(k, dequantize(vel, bits, dtype)), bits, scale)
        big.add_(inc2)
        bad = bad | worse | worse2 | out_of_range(vel) | out_of_range(big)
        if record:
            record(k + 1, dequantize(big, bits, dtype))
    if bool(bad):
        raise OverflowError(
            f"revnet fixed point: a value reached 2**{fixed_point.VALUE_BITS - bits} "
            f"(frac_bits={bits}); lower frac_bits or the scale of the activations"
        )
    return big, vel


def _eval(fam: Family, k: int, z: torch.Tensor, grad: bool):
    if not grad:
        with torch.no_grad():
            return fam(k, z)
    z.requires_grad_()
    with torch.enable_grad():
        return fam(k, z)


def exact_reverse(
    phi: Family,
    psi: Family,
    scale: float,
    bits: int,
    big: torch.Tensor,
    vel: torch.Tensor,
    dtype: torch.dtype,
    g: torch.Tensor | None = None,
    grads: Grads | None = None,
    record: Record = None,
):
    """Undo :func:`exact_forward`, backpropagating a cotangent ``g`` of x_N on the way.

    ``big`` and ``vel`` are updated in place.

    Returns:
        (X_0, V_0, gradient with respect to the input or None); X_0 == V_0 when exact.
    """
    gx, gv = (None, None) if g is None else (g.clone(), torch.zeros_like(g))
    if record:
        record(len(phi), dequantize(big, bits, dtype))
    for k in reversed(range(len(phi))):
        vf = dequantize(vel, bits, dtype)
        out_psi = _eval(psi, k, vf, g is not None)
        big.sub_(quantize(out_psi.detach(), bits, scale)[0])
        xf = dequantize(big, bits, dtype)
        out_phi = _eval(phi, k, xf, g is not None)
        vel.sub_(quantize(out_phi.detach(), bits, scale)[0])
        if g is not None:
            gv.add_(grads.vjp(out_psi, vf, psi.sets[k], gx * scale))
            gx.add_(grads.vjp(out_phi, xf, phi.sets[k], gv * scale))
        if record:
            record(k, xf.detach())
    return big, vel, None if g is None else gx + gv


class _RevNetExact(torch.autograd.Function):
    @staticmethod
    def forward(ctx, phi: Family, psi: Family, scale: float, bits: int, x: torch.Tensor, *tensors: torch.Tensor):
        with torch.no_grad(), deterministic():
            big, vel = exact_forward(phi, psi, scale, bits, x)
        ctx.phi, ctx.psi, ctx.scale, ctx.bits, ctx.tensors, ctx.dtype = phi, psi, scale, bits, tensors, x.dtype
        ctx.save_for_backward(big, vel)
        return dequantize(big, bits, x.dtype)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        big, vel = ctx.saved_tensors
        grads = Grads()
        with deterministic(), ctx.phi.recomputing(), ctx.psi.recomputing():
            big0, vel0, gin = exact_reverse(ctx.phi, ctx.psi, ctx.scale, ctx.bits, big, vel, ctx.dtype, g, grads)
        if not torch.equal(big0, vel0):
            raise RuntimeError(
                "revnet: the reversal did not return to x_0 = v_0; a block gave different bits "
                "when recomputed (non-deterministic kernel?)"
            )
        return (None, None, None, None, gin, *grads.result(ctx.tensors))


def revnet_exact_apply(phi: Family, psi: Family, scale: float, bits: int, x: torch.Tensor) -> torch.Tensor:
    """The RevNet whose backward keeps no activation (fixed-point state, exact reversal).

    Args:
        phi, psi: the two families of residual functions, one set per layer each.
        scale: the step h; bits: fractional bits of the fixed-point state.
        x: input, (batch, width) or (batch, channels, size, size).

    Returns:
        x_N of x's dtype; saved for backward: X_N and V_N only.
    """
    tensors = [*phi.tensors(), *psi.tensors()]
    return _RevNetExact.apply(phi, psi, scale, bits, x, *tensors)
