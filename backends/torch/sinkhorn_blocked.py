"""Blocked O(T)-memory Sinkhorn attention in pure PyTorch: the four passes and the custom backward.

Each pass loops over key blocks of ``block`` keys, recomputing the (B, H, Tq, block) tile of
S = s q k^T; ``row_lse`` keeps an online log-sum-exp across blocks. The recursion is
``backends/sinkhorn_blocked.py``'s; ``torch.autograd.Function`` saves only q, k, v, the output and the
potentials of every iteration, all O(T).
"""

from __future__ import annotations

import functools
import math

import torch
from torch.autograd.function import once_differentiable

from .. import sinkhorn_blocked as driver
from ..sinkhorn_blocked import DEFAULT_BLOCK, Primitives, Steps


def _fill(x: torch.Tensor) -> float:
    # Finite (not -inf): the log-sum-exp of an all-padded row stays finite; exp() of it is exactly 0.
    return torch.finfo(x.dtype).min / 4


def _pair(mask: torch.Tensor | None, lo: int, hi: int) -> torch.Tensor | None:
    """(B, 1|H, Tq, hi - lo) validity of the tile's (query, key) pairs; None without a mask."""
    return None if mask is None else mask[..., :, None] & mask[..., None, lo:hi]


def _logits(q: torch.Tensor, k: torch.Tensor, a: torch.Tensor, b: torch.Tensor, mask, lo: int, hi: int):
    """s q k_{lo:hi}^T + a_i + b_j on valid pairs, a large finite negative elsewhere: (B, H, Tq, hi - lo).

    Built in place (the passes run without autograd), so a tile costs one tile of memory."""
    x = torch.matmul(q, k[..., lo:hi, :].transpose(-1, -2)).mul_(q.shape[-1] ** -0.5)
    x.add_(a[..., :, None]).add_(b[..., None, lo:hi])
    pair = _pair(mask, lo, hi)
    return x if pair is None else x.masked_fill_(~pair, _fill(x))


def _blocks(t: int, block: int) -> range:
    return range(0, t, block)


def row_lse(
    q: torch.Tensor, k: torch.Tensor, g: torch.Tensor, mask: torch.Tensor | None, *, block: int
) -> torch.Tensor:
    """r_i = LSE_j(s q_i.k_j + g_j) over valid j, online across key blocks: (B, H, Tq)."""
    zero = torch.zeros_like(q[..., 0])
    m, total = torch.full_like(zero, _fill(zero)), zero
    for lo in _blocks(k.shape[-2], block):
        x = _logits(q, k, zero, g, mask, lo, lo + block)
        new = torch.maximum(m, x.amax(-1))
        total = total * torch.exp(m - new) + x.sub_(new[..., None]).exp_().sum(-1)
        m = new
    return m + torch.log(total)


def col_lse(
    q: torch.Tensor, k: torch.Tensor, f: torch.Tensor, mask: torch.Tensor | None, *, block: int
) -> torch.Tensor:
    """c_j = LSE_i(s q_i.k_j + f_i) over valid i, one key block at a time: (B, H, Tk)."""
    zero = torch.zeros_like(k[..., 0])
    return torch.cat(
        [torch.logsumexp(_logits(q, k, f, zero, mask, lo, lo + block), -2) for lo in _blocks(k.shape[-2], block)], -1
    )


def apply(
    q: torch.Tensor,
    k: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    x: torch.Tensor,
    mask: torch.Tensor | None,
    transpose: bool,
    *,
    block: int,
) -> torch.Tensor:
    """E x (B, H, Tq, e), or E^T x (B, H, Tk, e) with ``transpose``; E_ij = exp(s q_i.k_j + a_i + b_j), 0 off pairs."""
    tiles = ((lo, _logits(q, k, a, b, mask, lo, lo + block).exp_()) for lo in _blocks(k.shape[-2], block))
    if transpose:
        return torch.cat([e.transpose(-1, -2) @ x for _, e in tiles], -2)
    y = torch.zeros((*q.shape[:-1], x.shape[-1]), dtype=x.dtype, device=x.device)
    for lo, e in tiles:
        y.add_(e @ x[..., lo : lo + block, :])
    return y


def grad_qk(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    dout: torch.Tensor,
    steps: Steps,
    mask: torch.Tensor | None,
    *,
    block: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(dq, dk) = (s dC k, s dC^T q), dC recomputed tile by tile from every iteration's potentials."""
    scale, n = q.shape[-1] ** -0.5, steps.a.shape[0]
    dq, dk = torch.zeros_like(q), []
    for lo in _blocks(k.shape[-2], block):
        hi = lo + block
        dc = dout @ v[..., lo:hi, :].transpose(-1, -2)  # dout_i . v_j, times P below
        for t in reversed(range(n)):
            e = _logits(q, k, steps.a[t], steps.b[t], mask, lo, hi).exp_()
            if t == n - 1:
                dc.mul_(e)
            if t % 2 == 0:
                dc.addcmul_(steps.w[t][..., :, None], e, value=-1.0)
            else:
                dc.addcmul_(e, steps.w[t][..., None, lo:hi], value=-1.0)
            del e
        dq.add_(dc @ k[..., lo:hi, :], alpha=scale)
        dk.append((dc.transpose(-1, -2) @ q).mul_(scale))
    return dq, torch.cat(dk, -2)


@functools.cache
def primitives(block: int = DEFAULT_BLOCK) -> Primitives:
    """The pure-torch passes with ``block`` keys per tile (any T; the last tile may be shorter)."""
    return driver.blocked_primitives(row_lse, col_lse, apply, grad_qk, block)


class _Blocked(torch.autograd.Function):
    """Sinkhorn attention whose backward recomputes tiles instead of keeping the n_iter plans."""

    @staticmethod
    def forward(ctx, q, k, v, mask, n_iter: int, prims: Primitives):
        log_col = 0.0 if mask is not None else math.log(q.shape[-2] / k.shape[-2])
        a, b = driver.forward(prims, torch, q, k, n_iter, mask, log_col)
        out = prims.apply(q, k, a[-1], b[-1], v, mask, False)
        ctx.prims, ctx.masked = prims, mask is not None
        ctx.save_for_backward(q, k, v, out, torch.stack(a), torch.stack(b), *(() if mask is None else (mask,)))
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, dout):
        q, k, v, out, a, b, *rest = ctx.saved_tensors
        mask = rest[0] if rest else None
        dq, dk, dv = driver.backward(ctx.prims, torch, q, k, v, out, dout.contiguous(), a, b, mask)
        return dq, dk, dv, None, None, None


def blocked_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    n_iter: int,
    mask: torch.Tensor | None = None,
    prims: Primitives | None = None,
) -> torch.Tensor:
    """``blocked_attention`` of ``backends/sinkhorn_blocked.py`` in torch."""
    return _Blocked.apply(q, k, v, mask, n_iter, prims or primitives())


__all__ = [
    "DEFAULT_BLOCK",
    "Primitives",
    "Steps",
    "apply",
    "blocked_attention",
    "col_lse",
    "grad_qk",
    "primitives",
    "row_lse",
]
