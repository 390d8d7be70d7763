"""Log-domain Sinkhorn and Sinkhorn attention (Sinkformers) in PyTorch: ``backends.sinkhorn.Sinkhorn`` and ``Attention``.

The maths and the impls are described once in ``backends/sinkhorn.py``.
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F

from backends.sinkhorn import check_attention, check_sinkhorn, load_kernel, resolve_impl

from .. import sinkhorn_blocked as driver
from ..sinkhorn_blocked import Primitives
from . import sinkhorn_blocked

IMPLS = ("naive", "blocked", "triton", "auto")
"""``attention``'s impls in torch (``backends/sinkhorn.py`` says what each is)."""


def _iterate(scores: torch.Tensor, n_iter: int, mask: torch.Tensor | None) -> torch.Tensor:
    """The transport plan after ``n_iter`` alternating log-domain normalisations (differentiable)."""
    n, m = scores.shape[-2:]
    if mask is None:
        cost, log_col = scores, math.log(n / m)
        rows = cols = pair = None
    else:
        rows, cols = mask.unsqueeze(-1), mask.unsqueeze(-2)
        pair = rows & cols
        # A finite fill (not -inf) keeps the log-sum-exp of an all-masked row finite, so its
        # gradient is 0, not NaN; exp() of it underflows to exactly 0 in the valid rows.
        cost = torch.where(pair, scores, torch.finfo(scores.dtype).min / 4)
        log_col = 0.0
    f = torch.zeros_like(scores[..., :1])
    g = torch.zeros_like(scores[..., :1, :])
    for step in range(n_iter):
        if step % 2 == 0:
            f = -torch.logsumexp(cost + g, dim=-1, keepdim=True)
            if rows is not None:
                f = torch.where(rows, f, 0.0)
        else:
            g = log_col - torch.logsumexp(cost + f, dim=-2, keepdim=True)
            if cols is not None:
                g = torch.where(cols, g, 0.0)
    plan = torch.exp(cost + f + g)
    return plan if pair is None else torch.where(pair, plan, 0.0)


def _implicit_grad(plan: torch.Tensor, grad: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The implicit-function-theorem gradient w.r.t. the scores (``backends/sinkhorn.py``)."""
    gp = grad * plan
    x, y = gp.sum(-1), gp.sum(-2)
    a, b = plan.sum(-1), plan.sum(-2)
    if mask is None:
        cols = torch.ones_like(b)
    else:
        cols = mask.expand(b.shape).to(plan.dtype)
        a = torch.where(mask.expand(a.shape), a, 1.0)
        b = torch.where(mask.expand(b.shape), b, 1.0)
    scaled = plan / a.unsqueeze(-1)
    schur = torch.diag_embed(b) - plan.transpose(-1, -2) @ scaled
    schur = schur + cols.unsqueeze(-1) * cols.unsqueeze(-2) / cols.sum(-1, keepdim=True).clamp(min=1.0).unsqueeze(-1)
    rhs = y - (scaled.transpose(-1, -2) @ x.unsqueeze(-1)).squeeze(-1)
    v = torch.linalg.solve(schur, rhs.unsqueeze(-1)).squeeze(-1)
    u = (x - (plan @ v.unsqueeze(-1)).squeeze(-1)) / a
    return plan * (grad - u.unsqueeze(-1) - v.unsqueeze(-2))


class _ImplicitSinkhorn(torch.autograd.Function):
    """Sinkhorn whose backward differentiates the fixed point instead of the iterations."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, n_iter: int, mask: torch.Tensor | None) -> torch.Tensor:
        with torch.no_grad():
            plan = _iterate(scores, n_iter, mask)
        ctx.save_for_backward(plan, *(() if mask is None else (mask,)))
        return plan

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        plan, *rest = ctx.saved_tensors
        return _implicit_grad(plan, grad, rest[0] if rest else None), None, None


def sinkhorn(
    scores: torch.Tensor, n_iter: int, mask: torch.Tensor | None = None, implicit: bool = False
) -> torch.Tensor:
    """``backends.sinkhorn.Sinkhorn`` in PyTorch."""
    check_sinkhorn(
        tuple(scores.shape),
        scores.dtype,
        scores.is_floating_point(),
        n_iter,
        None if mask is None else tuple(mask.shape),
        None if mask is None else mask.dtype,
        mask is None or mask.dtype == torch.bool,
        finite=lambda: bool(torch.isfinite(scores).all()),
    )
    if implicit:
        return _ImplicitSinkhorn.apply(scores, n_iter, mask)
    return _iterate(scores, n_iter, mask)


def _kernel(q: torch.Tensor, k: torch.Tensor) -> Primitives:
    """The Triton passes of ``backends/torch/sinkhorn_triton.py``, imported on first use."""
    if not (q.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"):
        raise ValueError(f"impl='triton': needs CUDA tensors or TRITON_INTERPRET=1, got device {q.device}")
    module = load_kernel("triton", __package__, q.shape[-2], k.shape[-2], IMPLS)
    return driver.kernel_primitives("triton", module)


def _resolve(impl: str, implicit: bool, q: torch.Tensor, k: torch.Tensor) -> Primitives | None:
    """The passes ``impl`` runs on (None: the naive impl); ``backends.sinkhorn.resolve_impl`` decides."""
    return resolve_impl(
        impl,
        implicit,
        "triton",
        q.is_cuda,
        q.shape[-2] == k.shape[-2],
        lambda: _kernel(q, k),
        sinkhorn_blocked.primitives,
    )


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    normalization: str = "softmax",
    sinkhorn_iters: int = 3,
    mask: torch.Tensor | None = None,
    implicit: bool = False,
    impl: str = "naive",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``backends.sinkhorn.Attention`` in PyTorch; ``triton`` needs CUDA or ``TRITON_INTERPRET=1``.

    ``auto``: triton on CUDA, else blocked.
    """
    n_iter = check_attention(
        (tuple(q.shape), tuple(k.shape), tuple(v.shape)),
        (q.dtype, k.dtype, v.dtype),
        q.is_floating_point(),
        normalization,
        sinkhorn_iters,
        None if mask is None else tuple(mask.shape),
        None if mask is None else mask.dtype,
        mask is None or mask.dtype == torch.bool,
        impl,
        IMPLS,
        # Sinkhorn alone checks values (softmax attention never did: a model's own NaN check comes first).
        finite=(lambda: bool(torch.isfinite(q).all() & torch.isfinite(k).all() & torch.isfinite(v).all()))
        if normalization == "sinkhorn"
        else None,
    )
    prims = _resolve(impl, implicit and normalization == "sinkhorn", q, k)
    if prims is not None:
        return sinkhorn_blocked.blocked_attention(q, k, v, n_iter, mask, prims), None
    scores = (q @ k.transpose(-1, -2)) * (q.shape[-1] ** -0.5)
    if normalization == "softmax" and mask is None:
        weights = torch.softmax(scores, dim=-1)
    elif implicit and normalization == "sinkhorn":
        weights = _ImplicitSinkhorn.apply(scores, n_iter, mask)
    else:
        weights = _iterate(scores, n_iter, mask)  # checked above: sinkhorn() would check again
    return weights @ v, weights


def fused_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Fused softmax attention (``scaled_dot_product_attention``), the baseline to beat.

    Args:
        q, k, v: (B, H, T, d) float.

    Returns:
        (B, H, T, d) ``softmax(q k^T / sqrt(d)) v`` without materialising the T x T matrix where a
        fused kernel exists for the device.
    """
    return F.scaled_dot_product_attention(q, k, v)
