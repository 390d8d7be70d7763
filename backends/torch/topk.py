"""Relaxed top-k mask and top-k in magnitude (thesis chapter 7) in torch, with closed-form gradients.

Three solvers give the same operator: ``threshold`` (exact: ``torch.topk`` of the k + m values
around the k-th, prefix sums, binary search; a full sort only where the window is wide), ``pav`` (exact: generic isotonic PAV, numba on the host CPU, one row
per thread), ``dykstra`` (p = 2 only: Algorithm 7.7 as a plain eager loop that checks its stop
test every 10 iterations). Gradients use the closed-form Jacobian of Prop. 7.8 through
``torch.autograd.Function`` (O(n) memory per row). For Dykstra the gradient is the exact
solution's at the blocks the unconverged iterate found (exact once it has converged).

Inputs: any batch shape, along the last axis, float16/bfloat16 (computed in float32), float32 or
float64. Integer or bool inputs raise ValueError (cast them first); so do NaN and +-inf, because
the relaxed operators are not defined there (the hard baselines follow ``torch.topk`` instead).
"""

from __future__ import annotations

import torch

from backends.topk import DEFAULT_MAX_ITER, OPERATORS, check_args, default_tol, pav

from ._topk_solvers import block_vjp, dykstra, select_threshold, threshold_output, threshold_vjp

_NOT_FINITE = "x contains NaN or +-inf; the relaxed top-k is defined for finite inputs only"


def _check_sorted_finite(sorted_rows: torch.Tensor) -> None:
    """NaN and +-inf end up first or last in a sorted row, so two entries per row tell."""
    if not bool(torch.isfinite(sorted_rows[:, [0, -1]]).all()):
        raise ValueError(_NOT_FINITE)


def _as_rows(x: torch.Tensor, name: str = "x") -> tuple[torch.Tensor, int]:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        dtype = getattr(x, "dtype", type(x).__name__)
        raise ValueError(f"{name} has dtype {dtype}; allowed: floating tensors (cast integers first, e.g. x.float())")
    if x.dim() == 0:
        raise ValueError(f"{name} is a scalar; the operators act along the last axis of a tensor with ndim >= 1")
    n = x.shape[-1]
    rows = x.reshape(-1, n)
    return (rows.float() if rows.dtype in (torch.float16, torch.bfloat16) else rows), n


def _check_finite(rows: torch.Tensor) -> None:
    """One pass: NaN propagates into the extremes, +-inf is one of them."""
    lo, hi = torch.aminmax(rows)
    if not bool(torch.isfinite(lo) & torch.isfinite(hi)):
        raise ValueError(_NOT_FINITE)


class _Threshold(torch.autograd.Function):
    """Exact threshold solver on the top k + m values (selection); backward by Prop. 7.8 on the pooled block."""

    @staticmethod
    def forward(ctx, x, k, lam, e, op):
        _check_finite(x)
        t, index = select_threshold(x if op == "mask" else x.abs(), k, lam, e, op)
        ctx.args = (k, lam, e, op)
        if index is None or (op == "mag" and not bool((t > 0).all())):  # every element may be non-zero
            ctx.save_for_backward(x, t)
            return threshold_output(x, t, lam, e, op)
        # only the selected elements can be non-zero (s_i > t): solve and differentiate there
        x_top = x.gather(1, index)
        y_top = threshold_output(x_top, t, lam, e, op)
        ctx.save_for_backward(x_top, t, index, y_top)
        return x.new_zeros(x.shape).scatter_(1, index, y_top)

    @staticmethod
    def backward(ctx, g):
        if len(ctx.saved_tensors) == 2:
            x, t = ctx.saved_tensors
            return threshold_vjp(x, t, g, *ctx.args), None, None, None, None
        x_top, t, index, y_top = ctx.saved_tensors
        grad_top = threshold_vjp(x_top, t, g.gather(1, index), *ctx.args, y=y_top)
        return g.new_zeros(g.shape).scatter_(1, index, grad_top), None, None, None, None


def _sorted_solve(x, k, lam, e, op, solver, max_iter, tol):
    """Sort, solve the isotonic problem with PAV or Dykstra; return (s - v, block ids, perm, iterations)."""
    s, perm = torch.sort(x if op == "mask" else x.abs(), dim=1, descending=True)
    _check_sorted_finite(s)
    if solver == "pav":
        r, bid = pav(s.detach().cpu().numpy(), k, lam, e, op)
        return (
            torch.from_numpy(r).to(s.device),
            torch.from_numpy(bid).to(device=s.device, dtype=torch.int64),
            perm,
            None,
        )
    w = (torch.arange(s.shape[1], device=s.device) < k).to(s.dtype)
    if op == "mask":
        target, c = s - lam * w, None
    else:
        c = 1.0 + lam * w
        target = s / c
    if tol is None:
        tol = default_tol(torch.finfo(s.dtype).eps, float(s.abs().max()) if s.numel() else 0.0)
    v, bid, it = dykstra(target, c, max_iter or DEFAULT_MAX_ITER, tol)
    if op == "mag":
        v = v.clamp_min(0.0)
    return s - v, bid, perm, it


def _sorted_output(x, r, perm, lam, e, op):
    y_sorted = r / lam if e == 1 else (r / lam) ** 3
    y = torch.empty_like(y_sorted).scatter_(1, perm, y_sorted)
    return y if op == "mask" else torch.sign(x) * y


class _Sorted(torch.autograd.Function):
    """PAV or Dykstra; backward by Prop. 7.8 on the blocks the solver returned."""

    @staticmethod
    def forward(ctx, x, k, lam, e, op, solver, max_iter, tol):
        r, bid, perm, _it = _sorted_solve(x, k, lam, e, op, solver, max_iter, tol)
        ctx.save_for_backward(x, r, bid, perm)
        ctx.args = (k, lam, e, op)
        return _sorted_output(x, r, perm, lam, e, op)

    @staticmethod
    def backward(ctx, g):
        x, r, bid, perm = ctx.saved_tensors
        k, lam, e, op = ctx.args
        h = g if op == "mask" else g * torch.sign(x)
        out_sorted = block_vjp(r, bid, h.gather(1, perm), k, lam, e, op)
        out = torch.empty_like(out_sorted).scatter_(1, perm, out_sorted)
        return (out if op == "mask" else torch.sign(x) * out), None, None, None, None, None, None, None


def _relaxed(x, k, op, lam, p, solver, max_iter, tol, *, info: bool = False):
    rows, n = _as_rows(x)
    a = check_args(n, k, lam, p, solver, max_iter, tol)
    iterations = None
    if a.k == 0 or rows.numel() == 0:
        if not bool(torch.isfinite(rows).all()):
            raise ValueError(_NOT_FINITE)
        y = rows * 0.0
    elif a.solver == "threshold":
        y = _Threshold.apply(rows, a.k, a.lam, a.e, op)
    elif info:
        with torch.no_grad():
            r, _bid, perm, iterations = _sorted_solve(rows, a.k, a.lam, a.e, op, a.solver, a.max_iter, a.tol)
            y = _sorted_output(rows, r, perm, a.lam, a.e, op)
    else:
        y = _Sorted.apply(rows, a.k, a.lam, a.e, op, a.solver, a.max_iter, a.tol)
    return y.to(x.dtype).reshape(x.shape), iterations


def topk_mask(
    x: torch.Tensor,
    k: int,
    *,
    lam: float = 0.1,
    p: float = 2.0,
    solver: str = "threshold",
    max_iter: int | None = None,
    tol: float | None = None,
) -> torch.Tensor:
    """``backends.topk.TopkMask`` in PyTorch."""
    return _relaxed(x, k, "mask", lam, p, solver, max_iter, tol)[0]


def topk_mag(
    x: torch.Tensor,
    k: int,
    *,
    lam: float = 0.1,
    p: float = 2.0,
    solver: str = "threshold",
    max_iter: int | None = None,
    tol: float | None = None,
) -> torch.Tensor:
    """``backends.topk.TopkMag`` in PyTorch."""
    return _relaxed(x, k, "mag", lam, p, solver, max_iter, tol)[0]


def hard_topk_mask(x: torch.Tensor, k: int) -> torch.Tensor:
    """``backends.topk.HardTopkMask`` in PyTorch. Ties: ``torch.topk``'s choice."""
    _rows, n = _as_rows(x)
    check_args(n, k, 1.0, 2.0, "threshold", None, None)
    idx = torch.topk(x, int(k), dim=-1).indices
    return torch.zeros_like(x).scatter_(-1, idx, 1.0)


def hard_topk_mag(x: torch.Tensor, k: int) -> torch.Tensor:
    """``backends.topk.HardTopkMag`` in PyTorch."""
    return x * hard_topk_mask(x.detach().abs(), k)


def _dispatch(x, k, op, lam, p, solver, max_iter, tol, info=False):
    if solver == "hard":
        return (hard_topk_mask if op == "mask" else hard_topk_mag)(x, k), None
    if op not in OPERATORS:
        raise ValueError(f"op={op!r} is not one of {', '.join(OPERATORS)}")
    return _relaxed(x, k, op, lam, p, solver, max_iter, tol, info=info)


def topk_solve(
    x: torch.Tensor,
    k: int,
    *,
    op: str = "mask",
    lam: float = 0.1,
    p: float = 2.0,
    solver: str = "threshold",
    max_iter: int | None = None,
    tol: float | None = None,
) -> tuple[torch.Tensor, int | None]:
    """``backends.topk.TopkSolve`` in PyTorch."""
    with torch.no_grad():
        return _dispatch(x, k, op, lam, p, solver, max_iter, tol, info=True)


def topk_vjp(
    x: torch.Tensor,
    k: int,
    cotangent: torch.Tensor,
    *,
    op: str = "mask",
    lam: float = 0.1,
    p: float = 2.0,
    solver: str = "threshold",
    max_iter: int | None = None,
    tol: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``backends.topk.TopkVjp`` in PyTorch."""
    with torch.enable_grad():
        xx = x.detach().requires_grad_(True)
        y, _ = _dispatch(xx, k, op, lam, p, solver, max_iter, tol)
        if not y.requires_grad:
            return y.detach(), torch.zeros_like(x)
        (grad,) = torch.autograd.grad(y, xx, cotangent)
    return y.detach(), grad
