"""Relaxed top-k mask and top-k in magnitude (thesis chapter 7) in JAX, with closed-form gradients.

Three solvers give the same operator: ``threshold`` (exact: ``lax.top_k`` of the k + m values
around the k-th, a full sort only where the window is wide; prefix sums, binary search in
``lax.fori_loop``; jittable, no custom kernel), ``pav`` (exact: generic isotonic PAV on the host
CPU through ``jax.pure_callback``, numba, one row per thread), ``dykstra`` (p = 2 only:
Algorithm 7.7 as one ``lax.while_loop`` with its stop test). Gradients use the closed-form
Jacobian of Prop. 7.8 through ``jax.custom_vjp`` (O(n) residuals per row). For Dykstra the
gradient is the exact solution's at the blocks the unconverged iterate found.

Inputs: any batch shape, along the last axis, float16/bfloat16 (computed in float32), float32 or
float64 (pass dtypes explicitly: the backend runs in 64-bit mode). Integer or bool inputs raise
ValueError (cast them first). NaN and +-inf raise ValueError when the call is eager; inside an
outer ``jax.jit`` the values cannot be inspected, and a row with a non-finite entry gives NaNs.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from backends.topk import DEFAULT_MAX_ITER, OPERATORS, check_args, default_tol, pav

from ._topk_solvers import (
    block_vjp,
    dykstra,
    saturates_at,
    select_margin,
    select_threshold,
    solve_selected,
    threshold_output,
    threshold_vjp,
)


def _rows(x: jax.Array) -> jax.Array:
    n = x.shape[-1]
    rows = x.reshape(-1, n)
    return rows.astype(jnp.float32) if rows.dtype in (jnp.float16, jnp.bfloat16) else rows


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def _threshold(x, k, lam, e, op):
    return _threshold_fwd(x, k, lam, e, op)[0]


def _scatter(x, index, values):
    """Zeros of x's shape with ``values`` (B, W) at ``index`` (B, W) along the last axis."""
    rows = jnp.broadcast_to(jnp.expand_dims(jnp.arange(x.shape[0]), 1), index.shape)
    return jnp.zeros_like(x).at[rows, index].set(values)


def _selected_output(x, t, index, fits, lam, e, op):
    """Output at ``t``; when ``fits`` (``index`` holds every s_i > t) computed on the selection only.

    For the magnitude with t = 0 (at most k non-zero |x_i|) every element is saturated: dense.
    """
    compact = fits if op == "mask" else fits & jnp.all(t > 0)
    y = lax.cond(
        compact,
        lambda: _scatter(x, index, threshold_output(jnp.take_along_axis(x, index, 1), t, lam, e, op)),
        lambda: threshold_output(x, t, lam, e, op),
    )
    return y, compact


def _selected_vjp(x, t, index, compact, g, k, lam, e, op):
    """``J^T g`` at ``t`` (Prop. 7.8), on the selection only when ``compact``."""

    def on_selection():
        x_top, g_top = jnp.take_along_axis(x, index, 1), jnp.take_along_axis(g, index, 1)
        return _scatter(x, index, threshold_vjp(x_top, t, g_top, k, lam, e, op))

    return lax.cond(compact, on_selection, lambda: threshold_vjp(x, t, g, k, lam, e, op))


def _threshold_fwd(x, k, lam, e, op):
    t, index, fits = select_threshold(x if op == "mask" else jnp.abs(x), k, lam, e, op)
    if index is None:
        return threshold_output(x, t, lam, e, op), (x, t, None, None)
    y, compact = _selected_output(x, t, index, fits, lam, e, op)
    return y, (x, t, index, compact)


def _threshold_bwd(k, lam, e, op, res, g):
    x, t, index, compact = res
    if index is None:
        return (threshold_vjp(x, t, g, k, lam, e, op),)
    return (_selected_vjp(x, t, index, compact, g, k, lam, e, op),)


_threshold.defvjp(_threshold_fwd, _threshold_bwd)


def _pav_host(k, lam, e, op, s):
    return pav(np.asarray(s), k, lam, e, op)


def _sorted_solve(x, k, lam, e, op, solver, max_iter, tol):
    """Sort, solve the isotonic problem with PAV or Dykstra; return (s - v, block ids, perm, iterations)."""
    B, n = x.shape
    key = x if op == "mask" else jnp.abs(x)
    neg, perm = lax.sort((-key, jnp.broadcast_to(jnp.arange(n), (B, n))), dimension=1, num_keys=1)
    s = -neg
    if solver == "pav":
        shapes = (jax.ShapeDtypeStruct(s.shape, s.dtype), jax.ShapeDtypeStruct(s.shape, jnp.int32))
        r, bid = jax.pure_callback(functools.partial(_pav_host, k, lam, e, op), shapes, s, vmap_method="broadcast_all")
        return r, bid, perm, None
    w = (jnp.arange(n) < k).astype(s.dtype)
    if op == "mask":
        target, c = s - lam * jnp.expand_dims(w, 0), None
    else:
        c = 1.0 + lam * w
        target = s / jnp.expand_dims(c, 0)
    if tol is None:
        eps = float(jnp.finfo(s.dtype).eps)
        tol = default_tol(eps, 0.0) + 4.0 * eps * jnp.max(jnp.abs(s))
    v, bid, it = dykstra(target, c, max_iter or DEFAULT_MAX_ITER, tol)
    if op == "mag":
        v = jnp.maximum(v, 0.0)
    return s - v, bid, perm, it


def _unsort(values, perm):
    return jax.vmap(lambda v, p: jnp.zeros_like(v).at[p].set(v))(values, perm)


def _sorted_output(x, r, perm, lam, e, op):
    y = _unsort(r / lam if e == 1 else (r / lam) ** 3, perm)
    return y if op == "mask" else jnp.sign(x) * y


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4, 5, 6, 7))
def _sorted(x, k, lam, e, op, solver, max_iter, tol):
    return _sorted_fwd(x, k, lam, e, op, solver, max_iter, tol)[0]


def _sorted_fwd(x, k, lam, e, op, solver, max_iter, tol):
    r, bid, perm, _ = _sorted_solve(x, k, lam, e, op, solver, max_iter, tol)
    return _sorted_output(x, r, perm, lam, e, op), (x, r, bid, perm)


def _sorted_bwd(k, lam, e, op, solver, max_iter, tol, res, g):
    x, r, bid, perm = res
    h = g if op == "mask" else g * jnp.sign(x)
    out = _unsort(block_vjp(r, bid, jnp.take_along_axis(h, perm, 1), k, lam, e, op), perm)
    return (out if op == "mask" else jnp.sign(x) * out,)


_sorted.defvjp(_sorted_fwd, _sorted_bwd)


@functools.partial(jax.jit, static_argnames=("op", "width"))
def _top_k(rows, *, op, width):
    """``lax.top_k`` as the root of its own computation: XLA's CPU backend keeps its TopK kernel only
    there and turns a top_k inside a larger graph into a full sort."""
    return lax.top_k(rows if op == "mask" else jnp.abs(rows), width)


@functools.partial(jax.jit, static_argnames=("k", "lam", "e", "op"))
def _window_fits(top, *, k, lam, e, op):
    return jnp.all(top[:, -1] <= saturates_at(top[:, k], lam, e, op))  # #{s_i > U(s_k)} < k + m


def _eager_selection(x, k: int, lam: float, e: int, op: str):
    """The top k + m values and indices of each row of a concrete ``x`` when they hold every row's
    window (``select_threshold``'s widths, tried in turn), else None (traced inputs, short rows)."""
    if isinstance(x, jax.core.Tracer) or k == 0 or x.size == 0:
        return None
    rows = _rows(x)
    n = rows.shape[1]
    m = select_margin(k, n)
    while k + m < 0.5 * n:
        top, index = _top_k(rows, op=op, width=k + m)
        if bool(_window_fits(top, k=k, lam=lam, e=e, op=op)):
            return top, index
        m *= 16
    return None


def _solve_selected(rows, top, index, k, lam, e, op):
    t = solve_selected(top, k, lam, e, op)
    y, compact = _selected_output(rows, t, index, jnp.ones((), bool), lam, e, op)
    return t, y, compact


_STATIC = ("k", "op", "lam", "e", "solver", "max_iter", "tol", "info")


@functools.partial(jax.jit, static_argnames=_STATIC)
def _relaxed_rows(x, selection=None, *, k, op, lam, e, solver, max_iter, tol, info):
    rows = _rows(x)
    iterations = None
    if k == 0 or rows.size == 0:
        y = rows * 0.0
    elif selection is not None:  # forward only (the differentiable path is _threshold)
        y = _solve_selected(rows, *selection, k, lam, e, op)[1]
    elif solver == "threshold":
        y = _threshold(rows, k, lam, e, op)
    elif info:
        r, _, perm, iterations = _sorted_solve(rows, k, lam, e, op, solver, max_iter, tol)
        y = _sorted_output(rows, r, perm, lam, e, op)
    else:
        y = _sorted(rows, k, lam, e, op, solver, max_iter, tol)
    return y.astype(x.dtype).reshape(x.shape), iterations, jnp.all(jnp.isfinite(rows))


_NOT_FINITE = "x contains NaN or +-inf; the relaxed top-k is defined for finite inputs only"


@jax.jit
def _all_finite(x):
    return jnp.all(jnp.isfinite(x))


def _checked(x, name: str = "x") -> jax.Array:
    dtype = getattr(x, "dtype", None)
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(
            f"{name} has dtype {dtype or type(x).__name__}; allowed: floating arrays "
            "(cast integers first, e.g. x.astype(jnp.float32))"
        )
    if jnp.ndim(x) == 0:
        raise ValueError(f"{name} is a scalar; the operators act along the last axis of an array with ndim >= 1")
    return jnp.asarray(x)


def _relaxed(x, k, op, lam, p, solver, max_iter, tol, *, info: bool = False):
    x = _checked(x)
    a = check_args(x.shape[-1], k, lam, p, solver, max_iter, tol)
    selection = _eager_selection(x, a.k, a.lam, a.e, op) if a.solver == "threshold" else None
    y, it, finite = _relaxed_rows(
        x, selection, k=a.k, op=op, lam=a.lam, e=a.e, solver=a.solver, max_iter=a.max_iter, tol=a.tol, info=info
    )
    if not isinstance(x, jax.core.Tracer) and not bool(finite):
        raise ValueError(_NOT_FINITE)
    return y, (None if it is None else int(it))


def topk_mask(
    x: jax.Array,
    k: int,
    *,
    lam: float = 0.1,
    p: float = 2.0,
    solver: str = "threshold",
    max_iter: int | None = None,
    tol: float | None = None,
) -> jax.Array:
    """``backends.topk.TopkMask`` in JAX."""
    return _relaxed(x, k, "mask", lam, p, solver, max_iter, tol)[0]


def topk_mag(
    x: jax.Array,
    k: int,
    *,
    lam: float = 0.1,
    p: float = 2.0,
    solver: str = "threshold",
    max_iter: int | None = None,
    tol: float | None = None,
) -> jax.Array:
    """``backends.topk.TopkMag`` in JAX."""
    return _relaxed(x, k, "mag", lam, p, solver, max_iter, tol)[0]


@functools.partial(jax.jit, static_argnames=("k",))
def _hard_mask(x, k):
    if k == 0:
        return jnp.zeros_like(x)
    n = x.shape[-1]
    rows = x.reshape(-1, n)
    idx = lax.top_k(rows, k)[1]
    return jax.vmap(lambda r, i: jnp.zeros_like(r).at[i].set(1.0))(rows, idx).reshape(x.shape)


def hard_topk_mask(x: jax.Array, k: int) -> jax.Array:
    """``backends.topk.HardTopkMask`` in JAX. Ties: ``lax.top_k``'s choice."""
    x = _checked(x)
    check_args(x.shape[-1], k, 1.0, 2.0, "threshold", None, None)
    return _hard_mask(x, int(k))


def hard_topk_mag(x: jax.Array, k: int) -> jax.Array:
    """``backends.topk.HardTopkMag`` in JAX."""
    x = _checked(x)
    return x * hard_topk_mask(lax.stop_gradient(jnp.abs(x)), k)


def _dispatch(x, k, op, lam, p, solver, max_iter, tol, info=False):
    if solver == "hard":
        return (hard_topk_mask if op == "mask" else hard_topk_mag)(x, k), None
    if op not in OPERATORS:
        raise ValueError(f"op={op!r} is not one of {', '.join(OPERATORS)}")
    return _relaxed(x, k, op, lam, p, solver, max_iter, tol, info=info)


def topk_solve(
    x: jax.Array,
    k: int,
    *,
    op: str = "mask",
    lam: float = 0.1,
    p: float = 2.0,
    solver: str = "threshold",
    max_iter: int | None = None,
    tol: float | None = None,
) -> tuple[jax.Array, int | None]:
    """``backends.topk.TopkSolve`` in JAX."""
    return _dispatch(x, k, op, lam, p, solver, max_iter, tol, info=True)


@functools.partial(jax.jit, static_argnames=("k", "op", "lam", "p", "solver", "max_iter", "tol"))
def _vjp(x, cotangent, *, k, op, lam, p, solver, max_iter, tol):
    y, pullback = jax.vjp(lambda xx: _dispatch(xx, k, op, lam, p, solver, max_iter, tol)[0], x)
    return y, pullback(cotangent)[0]


@functools.partial(jax.jit, static_argnames=("k", "op", "lam", "e"))
def _vjp_selected(x, cotangent, top, index, *, k, op, lam, e):
    """Output and ``J^T cotangent`` from an eager selection (the closed form of ``_threshold_bwd``)."""
    rows = _rows(x)
    t, y, compact = _solve_selected(rows, top, index, k, lam, e, op)
    g = cotangent.reshape(rows.shape).astype(rows.dtype)
    grad = _selected_vjp(rows, t, index, compact, g, k, lam, e, op)
    return y.astype(x.dtype).reshape(x.shape), grad.astype(x.dtype).reshape(x.shape)


def topk_vjp(
    x: jax.Array,
    k: int,
    cotangent: jax.Array,
    *,
    op: str = "mask",
    lam: float = 0.1,
    p: float = 2.0,
    solver: str = "threshold",
    max_iter: int | None = None,
    tol: float | None = None,
) -> tuple[jax.Array, jax.Array]:
    """``backends.topk.TopkVjp`` in JAX. Jitted."""
    x = _checked(x)
    if solver != "hard":
        check_args(x.shape[-1], k, lam, p, solver, max_iter, tol)
    if not isinstance(x, jax.core.Tracer) and not bool(_all_finite(x)):
        raise ValueError(_NOT_FINITE)
    if solver == "threshold" and op in OPERATORS:
        a = check_args(x.shape[-1], k, lam, p, solver, max_iter, tol)
        selection = _eager_selection(x, a.k, a.lam, a.e, op)
        if selection is not None:
            return _vjp_selected(x, jnp.asarray(cotangent, x.dtype), *selection, k=a.k, op=op, lam=a.lam, e=a.e)
    return _vjp(
        x, jnp.asarray(cotangent, x.dtype), k=int(k), op=op, lam=lam, p=p, solver=solver, max_iter=max_iter, tol=tol
    )
