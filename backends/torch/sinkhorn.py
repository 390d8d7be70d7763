"""Log-domain Sinkhorn normalisation and the attention that uses it (Sinkformers), in PyTorch.

One iteration is one normalisation: iteration 0 normalises rows, 1 columns, 2 rows, ... (eq. 5.3),
so ``n_iter = 1`` is the softmax and an odd ``n_iter`` ends on rows. The scalings are kept in the
log domain (appendix 5.B, eq. 5.13) with marginals scaled so that rows sum to 1 and, for a square
matrix, columns sum to 1 (eq. 5.13 writes 1/n). ``attention(..., impl=...)`` chooses how: ``naive``
forms the T x T plan; the O(T)-memory impls run ``backends/sinkhorn_blocked.py``'s recursion over tiles.
Mirrors ``backends/jax/sinkhorn.py``.
"""

from __future__ import annotations

import importlib
import math
import os

import torch
import torch.nn.functional as F

from .. import sinkhorn_blocked as driver
from ..sinkhorn_blocked import Primitives
from ..sinkhorn_common import check_attention, check_sinkhorn
from . import sinkhorn_blocked

IMPLS = ("naive", "blocked", "triton", "auto")
"""``attention``'s impls in torch (``backends/sinkhorn_common.py`` says what each is)."""


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
    """Gradient w.r.t. the scores of a converged plan by the implicit function theorem.

    With P = diag(e^f) e^C diag(e^g) and the marginals a = P 1, b = P^T 1 fixed, the adjoint
    (u, v) solves [[diag(a), P], [P^T, diag(b)]] (u, v) = ((G*P) 1, (G*P)^T 1) and the gradient
    is P * (G - u 1^T - 1 v^T). The system is singular along (1, -1); the column block is solved
    with 1 1^T / m added, which fixes that direction without changing u_i + v_j.
    """
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
    """Sinkhorn's algorithm on ``exp(scores)`` in the log domain: ``n_iter`` row/column normalisations.

    Args:
        scores: (..., n, m) float, the cost C (attention logits).
        n_iter: number of normalisations, >= 1; 1 is the softmax over the last axis, odd ends on rows.
        mask: (..., n) bool padding mask, True for real tokens, broadcastable against
            ``scores.shape[:-1]`` (square scores only). Masked queries and keys take no part in
            either normalisation; every masked row and column of the output is 0.
        implicit: differentiate the converged fixed point (implicit function theorem) instead of
            back-propagating through every iteration; exact only at convergence.

    Returns:
        (..., n, m) the plan K^l: rows sum to 1; at convergence columns sum to n / m (1 when square).

    References:
        Thesis chapter 5, eq. 5.3 (iterations), appendix 5.B eq. 5.13 (log domain), section 5.3
        (implicit differentiation), Prop. 5.1 (invariance to f_i + g_j).
    """
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
    if q.shape[-2] != k.shape[-2]:
        raise ValueError(f"impl='triton': needs self-attention (Tq = Tk), got {q.shape[-2]} and {k.shape[-2]}")
    try:
        module = importlib.import_module(".sinkhorn_triton", __package__)
    except ImportError as err:
        raise ValueError(f"impl='triton': unavailable here ({err}); allowed {', '.join(IMPLS)}") from None
    return driver.kernel_primitives("triton", module)


def _resolve(impl: str, implicit: bool, q: torch.Tensor, k: torch.Tensor) -> Primitives | None:
    """The passes ``impl`` runs on (None: the naive impl)."""
    if impl == "auto":
        if implicit:
            return None
        if q.is_cuda and q.shape[-2] == k.shape[-2]:
            try:
                return _kernel(q, k)
            except ValueError:  # the kernel module cannot load here: the pure-framework passes
                pass
        return sinkhorn_blocked.primitives()
    if impl != "naive" and implicit:
        raise ValueError(f"implicit=True: only impl='naive' or 'auto' differentiate the fixed point, got impl={impl!r}")
    if impl == "naive":
        return None
    return _kernel(q, k) if impl == "triton" else sinkhorn_blocked.primitives()


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
    """Scaled dot-product attention normalised by the softmax or by Sinkhorn's algorithm.

    Args:
        q, k, v: (B, H, T, d) float, one dtype (k and v may have their own T; v its own d).
        normalization: ``softmax`` (row-stochastic) or ``sinkhorn`` (doubly stochastic in the limit).
        sinkhorn_iters: normalisations for ``sinkhorn`` (ignored by ``softmax``).
        mask: (B, 1 or H, T) bool padding mask, True for real tokens.
        implicit: implicit differentiation of Sinkhorn (see ``sinkhorn``); naive impl only.
        impl: ``naive`` materialises the T x T plan; ``blocked`` (pure torch) and ``triton`` (fused kernels,
            CUDA or ``TRITON_INTERPRET=1``) recompute it tile by tile in O(T) memory, same output and
            gradients; ``auto``: triton on CUDA, else blocked (naive when ``implicit``).

    Returns:
        out (B, H, T, d) and the attention matrices (B, H, T, T); None for the blocked impls, which never
        form them.

    References:
        Thesis chapter 5, eq. 5.1 (Transformer) and eq. 5.4 (Sinkformer).
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
