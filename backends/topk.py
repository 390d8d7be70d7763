"""NumPy-only parts of the relaxed top-k operators shared by both backends: argument checks and PAV.

The relaxed top-k mask and top-k in magnitude (thesis 7.4) reduce to the isotonic problem (7.5)
``v* = argmin_{v_1 >= ... >= v_n} sum_i h_i(v_i)`` on the sorted values ``s`` (of ``x`` for the
mask, of ``|x|`` for the magnitude), with ``w = 1_k`` and ``R = (lam/p) ||.||_p^p``:

- mask (phi(x) = x):          ``h_i(v) = r*(s_i - v) + w_i v``
- magnitude (phi = x^2 / 2):  ``h_i(v) = r*(s_i - v) + w_i v^2 / 2``, plus ``v >= 0`` (never active)

with ``r*(z) = (lam/q) |z/lam|^q``, ``1/p + 1/q = 1``; the output is ``y = grad R*(s - v)``
(sorted order), i.e. ``y_i = sign(s_i - v_i) |(s_i - v_i)/lam|^(q-1)``. Only ``p = 2`` (q = 2) and
``p = 4/3`` (q = 4) have a closed-form pooling step (7.A.6); ``e = q - 1`` is 1 or 3.

PAV (appendix 7.B.2) runs here, one row per thread, compiled by numba when it is installed (the
same code runs as plain Python, much slower, when it is not). JAX reaches it through
``jax.pure_callback``; torch calls it on the host.

The array maths both frameworks' solvers share (the head value and slope, the cubic root, the
pooling step, one Dykstra half-step) is written once below, array-API style: each function takes
the array namespace ``xp`` (``torch`` or ``jax.numpy``) and uses only names both provide.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Protocol

import numpy as np

from core.backend import Array

try:  # numba is optional: the kernel below is plain Python that numba compiles when present
    import numba

    HAVE_NUMBA = True
    prange = numba.prange
except ImportError:  # pragma: no cover - exercised only where numba is absent
    numba = None
    HAVE_NUMBA = False
    prange = range

SOLVERS = ("threshold", "pav", "dykstra")
"""Relaxed solvers: exact sort-and-search threshold, exact PAV, iterative Dykstra (p = 2 only)."""

OPERATORS = ("mask", "mag")
"""``mask``: relaxed top-k mask (phi(x) = x); ``mag``: relaxed top-k in magnitude (phi(x) = x^2/2)."""

DEFAULT_MAX_ITER = 1000
"""Dykstra's iteration cap when ``max_iter`` is None."""

MODE = {("mask", 1): 0, ("mask", 3): 1, ("mag", 1): 2, ("mag", 3): 3}
"""Integer code of (operator, exponent e = q - 1) used by the PAV kernel."""


@dataclasses.dataclass(frozen=True)
class TopkArgs:
    """Validated arguments of a relaxed top-k call."""

    k: int
    lam: float
    e: int
    solver: str
    max_iter: int | None
    tol: float | None


def exponent(p: float) -> int:
    """``q - 1`` for the supported ``p`` (2 -> 1, 4/3 -> 3); ValueError for any other ``p``."""
    try:
        pf = float(p)
    except (TypeError, ValueError):
        pf = math.nan
    if abs(pf - 2.0) < 1e-9:
        return 1
    if abs(pf - 4.0 / 3.0) < 1e-9:
        return 3
    raise ValueError(
        f"p={p!r} is not supported; allowed: 2 or 4/3 (the p-norms with a closed-form pooling step, thesis 7.A.6)"
    )


def check_args(n: int, k: object, lam: object, p: object, solver: object, max_iter: object, tol: object) -> TopkArgs:
    """Check the arguments of ``topk_mask``/``topk_mag`` for rows of length ``n``; raise naming the field.

    Args:
        n: length of the last axis of ``x``.
        k, lam, p, solver, max_iter, tol: as passed to the operator.

    Returns:
        The validated arguments, ``p`` turned into the exponent ``e = q - 1``.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= int(k) <= n:
        raise ValueError(f"k={k!r} must be an integer in [0, n] with n={n} (the last axis of x)")
    if (
        isinstance(lam, bool)
        or not isinstance(lam, (int, float, np.floating, np.integer))
        or not math.isfinite(float(lam))
        or float(lam) <= 0
    ):
        raise ValueError(f"lam={lam!r} must be a finite number > 0")
    e = exponent(p)
    if solver not in SOLVERS:
        raise ValueError(f"solver={solver!r} is not one of {', '.join(SOLVERS)}")
    if solver != "dykstra" and (max_iter is not None or tol is not None):
        raise ValueError(
            f"max_iter={max_iter!r} and tol={tol!r} apply to solver='dykstra' only; "
            f"solver={solver!r} is exact (leave them None)"
        )
    if solver == "dykstra":
        if e != 1:
            raise ValueError(
                f"solver='dykstra' needs p=2 (a Euclidean projection, thesis 7.5); got p={p!r}; "
                "use solver='threshold' or 'pav' for p=4/3"
            )
        if max_iter is not None and (
            isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1
        ):
            raise ValueError(f"max_iter={max_iter!r} must be a positive integer or None (default {DEFAULT_MAX_ITER})")
        if tol is not None and (not isinstance(tol, (int, float, np.floating)) or not float(tol) >= 0):
            raise ValueError(f"tol={tol!r} must be a number >= 0 or None (a few ulps of max|x|)")
    return TopkArgs(
        int(k),
        float(lam),
        e,
        str(solver),
        None if max_iter is None else int(max_iter),
        None if tol is None else float(tol),
    )


def default_tol(eps: float, scale: float) -> float:
    """Dykstra's default stopping change: ``4 eps (1 + scale)``, i.e. the iterate stopped moving."""
    return 4.0 * eps * (1.0 + scale)


# ----------------------------------------------------------------------------------------------
# Array maths shared by the torch and JAX solvers; ``xp`` is the namespace (torch or jax.numpy).
# ----------------------------------------------------------------------------------------------


def head_value(xp: Any, s: Any, lam: float, e: int) -> Any:
    """``Y(s)``, the magnitude operator's value on a saturated element: ``Y + lam Y^(p-1) = s``, s >= 0."""
    if e == 1:
        return s / (1.0 + lam)
    r = math.sqrt(lam / 3.0)  # c = Y^(1/3) solves c^3 + lam c - s = 0
    c = 2.0 * r * xp.sinh(xp.asinh(s * (1.5 / (lam * r))) / 3.0)
    return c * c * c


def head_slope(xp: Any, yh: Any, lam: float, e: int) -> Any:
    """``dY/ds`` at ``Y = yh``: ``1 / (1 + lam (p - 1) Y^(p - 2))``."""
    if e == 1:
        return xp.full_like(yh, 1.0 / (1.0 + lam))
    c2 = xp.abs(yh) ** (2.0 / 3.0)
    return c2 / (c2 + lam / 3.0)


def saturates_at(xp: Any, s: Any, lam: float, e: int, op: str) -> Any:
    """``U(s)``: the threshold below which an element of value ``s`` saturates (``s - lam``, or ``Y(s)``)."""
    return s - lam if op == "mask" else head_value(xp, s, lam, e)


def cubic_root(xp: Any, P: Any, Q: Any) -> Any:
    """Real root of ``d^3 + P d + Q = 0`` for ``P >= 0`` (hyperbolic form, stable), elementwise."""
    big = P > 1e-30
    Ps = xp.where(big, P, xp.ones_like(P))
    r = xp.sqrt(Ps / 3.0)
    hyp = -2.0 * r * xp.sinh(xp.asinh(1.5 * Q / (Ps * r)) / 3.0)
    return xp.where(big, hyp, -xp.sign(Q) * xp.abs(Q) ** (1.0 / 3.0))


def pool(xp: Any, op: str, e: int, lam: float, cnt: Any, wsum: Any, mu: Any, m2: Any, m3: Any) -> Any:
    """Block value ``gamma_B*`` (eq. 7.6, 7.A.6) from count, sum of w, mean and centred moments."""
    cnt = xp.clip(cnt, min=1.0)
    if e == 1:
        return mu - lam * wsum / cnt if op == "mask" else cnt * mu / (cnt + lam * wsum)
    l3 = lam**3
    if op == "mask":
        return mu + cubic_root(xp, 3.0 * m2 / cnt, (l3 * wsum - m3) / cnt)
    return mu + cubic_root(xp, (3.0 * m2 + l3 * wsum) / cnt, (l3 * wsum * mu - m3) / cnt)


def pair_projection(xp: Any, a: Any, b: Any, d: Any, w: tuple[Any, Any] | None) -> tuple[Any, Any, Any]:
    """One half-step of Dykstra's Algorithm 7.7 on pairs: the projection onto {a_j >= b_j} for every j.

    Args:
        a, b: (B, m) the first and second elements of the m pairs. d: (B, m) the pairs' last
            corrections (the p or q of Algorithm 7.7: +w_b d on ``a``, -w_a d on ``b``), added back
            before projecting. w: (w_a, w_b), the pairs' weights in the c-norm, or None (unit weights).

    Returns:
        The projected (a, b) and the new corrections d. Written with augmented assignments, so on
        mutable arrays (torch) ``a`` and ``b`` are updated in place (views of the iterate stay
        current, no copy), and on immutable ones (JAX) new arrays are returned.

    References:
        Thesis Algorithm 7.7 (Dykstra's projection onto the decreasing cone C1 ∩ C2).
    """
    if w is None:
        a += d
        b -= d
        d = xp.clip(a - b, max=0.0)
        d *= 0.5
        a -= d
        b += d
    else:
        wa, wb = w
        a += wb * d
        b -= wa * d
        d = xp.clip(a - b, max=0.0)
        d /= wa + wb
        a -= wb * d
        b += wa * d
    return a, b, d


# ----------------------------------------------------------------------------------------------
# PAV kernel (plain Python; numba compiles it when installed). Blocks keep count, sum of w, mean
# and centred second and third moments, merged with Chan/Pebay's formulas, so the p = 4/3 pooling
# cubic is solved without cancellation.
# ----------------------------------------------------------------------------------------------


def _cubic_root(P: float, Q: float) -> float:
    """The real root of ``d^3 + P d + Q = 0`` for ``P >= 0`` (hyperbolic form, no cancellation)."""
    if P > 1e-300:
        r = math.sqrt(P / 3.0)
        return -2.0 * r * math.sinh(math.asinh(1.5 * Q / (P * r)) / 3.0)
    return -math.copysign(abs(Q) ** (1.0 / 3.0), Q)


def _pool(mode: int, lam: float, cnt: float, wsum: float, mu: float, m2: float, m3: float) -> float:
    """``gamma_B* - mean_B(s)``, where ``gamma_B* = argmin_g sum_{i in B} h_i(g)`` (eq. 7.6, 7.A.6)."""
    if mode == 0:  # mask, p = 2
        return -lam * wsum / cnt
    if mode == 2:  # magnitude, p = 2: gamma = cnt mu / (cnt + lam W)
        return -lam * wsum * mu / (cnt + lam * wsum)
    l3 = lam * lam * lam
    if mode == 1:  # mask, p = 4/3: sum (s_i - g)^3 = lam^3 W
        if m2 == 0.0 and m3 == 0.0:  # equal values (a singleton): exactly lam (W / cnt)^(1/3) below them
            return -lam * (wsum / cnt) ** (1.0 / 3.0)
        return _cubic_root(3.0 * m2 / cnt, (l3 * wsum - m3) / cnt)
    # magnitude, p = 4/3: sum (s_i - g)^3 = lam^3 W g
    return _cubic_root((3.0 * m2 + l3 * wsum) / cnt, (l3 * wsum * mu - m3) / cnt)


def _pav_row(s, w, lam, mode, r, bid):
    """``r = s - v`` for the decreasing isotonic solution ``v`` of one sorted row ``s``, and block indices.

    Blocks keep their value as mean + offset, and ``r_i = (s_i - mean) - offset``: a singleton
    then gives ``r`` without rounding (e.g. exactly ``lam`` for a saturated mask entry).
    """
    n = s.shape[0]
    start = np.empty(n, np.int64)
    cnt = np.empty(n, np.float64)
    wsum = np.empty(n, np.float64)
    mu = np.empty(n, np.float64)
    m2 = np.empty(n, np.float64)
    m3 = np.empty(n, np.float64)
    off = np.empty(n, np.float64)
    top = -1
    for i in range(n):
        top += 1
        start[top] = i
        cnt[top] = 1.0
        wsum[top] = w[i]
        mu[top] = s[i]
        m2[top] = 0.0
        m3[top] = 0.0
        off[top] = _pool(mode, lam, 1.0, w[i], mu[top], 0.0, 0.0)
        while top > 0 and mu[top - 1] + off[top - 1] < mu[top] + off[top]:  # a violation: pool the last two
            na, nb = cnt[top - 1], cnt[top]
            nn = na + nb
            d = mu[top] - mu[top - 1]
            m3[top - 1] = (
                m3[top - 1]
                + m3[top]
                + d * d * d * na * nb * (na - nb) / (nn * nn)
                + 3.0 * d * (na * m2[top] - nb * m2[top - 1]) / nn
            )
            m2[top - 1] = m2[top - 1] + m2[top] + d * d * na * nb / nn
            mu[top - 1] = mu[top - 1] + d * nb / nn
            cnt[top - 1] = nn
            wsum[top - 1] = wsum[top - 1] + wsum[top]
            top -= 1
            off[top] = _pool(mode, lam, cnt[top], wsum[top], mu[top], m2[top], m3[top])
    for b in range(top + 1):
        end = start[b + 1] if b < top else n
        clipped = mode >= 2 and mu[b] + off[b] < 0.0  # magnitude: v >= 0 (Nemeth and Nemeth: truncate)
        for i in range(start[b], end):
            r[i] = s[i] if clipped else (s[i] - mu[b]) - off[b]  # in float64
            bid[i] = b


def _pav_rows(s, w, lam, mode, r, bid):
    for row in prange(s.shape[0]):
        _pav_row(s[row], w, lam, mode, r[row], bid[row])


if HAVE_NUMBA:
    _cubic_root = numba.njit(cache=True)(_cubic_root)
    _pool = numba.njit(cache=True)(_pool)
    _pav_row = numba.njit(cache=True)(_pav_row)
    _pav_rows = numba.njit(cache=True, parallel=True)(_pav_rows)


def pav(s: np.ndarray, k: int, lam: float, e: int, op: str) -> tuple[np.ndarray, np.ndarray]:
    """Exact isotonic solution of the relaxed top-k problem by PAV, one row per thread.

    Args:
        s: (..., n) float32/float64, each row sorted in decreasing order (``x`` for the mask, ``|x|``
            for the magnitude).
        k: number of ones in ``w = 1_k``; ``lam``: regularisation strength > 0; ``e``: ``q - 1``
            (1 for p = 2, 3 for p = 4/3); ``op``: ``mask`` or ``mag``.

    Returns:
        ``r = s - v`` (..., n) of ``s``'s dtype, where ``v`` is the decreasing isotonic solution
        (blocks of equal values; the output is ``grad R*(r)``), and ``bid`` (..., n) int32, each
        element's block index within its row (0, 1, ...).

    References:
        Thesis 7.5 (eq. 7.5, 7.6), 7.A.6 (pooling step), 7.B.2 (PAV, after Lim and Wright, 2016).
    """
    s = np.ascontiguousarray(s)
    if s.dtype not in (np.float32, np.float64):
        raise ValueError(f"s has dtype {s.dtype}; allowed: float32, float64")
    shape = s.shape
    n = shape[-1]
    flat = s.reshape(-1, n)
    w = (np.arange(n) < k).astype(np.float64)
    r = np.empty_like(flat)
    bid = np.empty(flat.shape, np.int32)
    if flat.size:
        _pav_rows(flat, w, float(lam), MODE[(op, e)], r, bid)
    return r.reshape(shape), bid.reshape(shape)


class TopkMask(Protocol):
    """Relaxed top-k mask ``argmax_{y in P(1_k)} <x, y> - (lam/p) ||y||_p^p`` along the last axis.

    Args:
        x: (..., n) floating array, finite. k: int in [0, n]. lam: > 0; as lam -> 0 the mask tends
            to the hard one. p: 2 (differentiable a.e.) or 4/3 (differentiable). solver:
            ``threshold``, ``pav`` or ``dykstra`` (p = 2). max_iter, tol: Dykstra only (defaults
            1000 and a few ulps of max|x|); None for the exact solvers.

    Returns:
        (..., n) of x's dtype, in [0, 1], summing to k per row, exactly 0 outside the top values.

    References:
        Thesis 7.3 (eq. 7.2), 7.4 (p-norm regularisation), 7.5 (PAV, Dykstra, Prop. 7.8).
    """

    def __call__(
        self,
        x: Array,
        k: int,
        *,
        lam: float = 0.1,
        p: float = 2.0,
        solver: str = "threshold",
        max_iter: int | None = None,
        tol: float | None = None,
    ) -> Array: ...


class TopkMag(Protocol):
    """Relaxed top-k in magnitude ``y_{phi,R}(x, 1_k)``, phi(x) = x^2/2, along the last axis.

    Args:
        x, k, lam, p, solver, max_iter, tol: as for ``topk_mask``.

    Returns:
        (..., n) of x's dtype with x's signs: at most the pooled block beyond k is non-zero; the k
        largest |x_i| far from the boundary give Y(|x_i|) (|x_i| / (1 + lam) for p = 2).

    References:
        Thesis 7.4 (eq. 7.4, k-support norm), Prop. 7.6 (reduction on |x|), 7.A.6 (pooling step).
    """

    def __call__(
        self,
        x: Array,
        k: int,
        *,
        lam: float = 0.1,
        p: float = 2.0,
        solver: str = "threshold",
        max_iter: int | None = None,
        tol: float | None = None,
    ) -> Array: ...


class HardTopkMask(Protocol):
    """Hard top-k mask: 1 at the k largest entries of each row.

    Args:
        x: (..., n) floating array. k: int in [0, n].

    Returns:
        (..., n) of x's dtype with exactly k ones per row; its gradient is zero.

    References:
        Thesis 7.3 (topkmask, eq. 7.2).
    """

    def __call__(self, x: Array, k: int) -> Array: ...


class HardTopkMag(Protocol):
    """Hard top-k in magnitude ``x * topkmask(|x|)``.

    Args:
        x: (..., n) floating array. k: int in [0, n].

    Returns:
        (..., n): x where |x| is among the k largest of its row, else 0.

    References:
        Thesis 7.3 (topkmag).
    """

    def __call__(self, x: Array, k: int) -> Array: ...


class TopkSolve(Protocol):
    """Forward only, with what the solver reports: (output, Dykstra's iterations or None).

    Args:
        x, k, lam, p, max_iter, tol: as for ``topk_mask``. op: ``mask`` or ``mag``. solver: as for
            ``topk_mask``, or ``hard`` for the hard operator (lam, p, max_iter, tol ignored).

    Returns:
        The output of ``topk_mask``/``topk_mag``/the hard operator, and the iterations Dykstra
        used (None for the other solvers).
    """

    def __call__(
        self,
        x: Array,
        k: int,
        *,
        op: str = "mask",
        lam: float = 0.1,
        p: float = 2.0,
        solver: str = "threshold",
        max_iter: int | None = None,
        tol: float | None = None,
    ) -> tuple[Array, int | None]: ...


class TopkVjp(Protocol):
    """Forward and backward in one call: (output, cotangent^T d output / d x).

    Args:
        x, k, op, lam, p, solver, max_iter, tol: as for ``topk_solve``. cotangent: x's shape.

    Returns:
        The output and the vector-Jacobian product (zeros for the hard mask).
    """

    def __call__(
        self,
        x: Array,
        k: int,
        cotangent: Array,
        *,
        op: str = "mask",
        lam: float = 0.1,
        p: float = 2.0,
        solver: str = "threshold",
        max_iter: int | None = None,
        tol: float | None = None,
    ) -> tuple[Array, Array]: ...


OPS: dict[str, type] = {
    "topk_mask": TopkMask,
    "topk_mag": TopkMag,
    "hard_topk_mask": HardTopkMask,
    "hard_topk_mag": HardTopkMag,
    "topk_solve": TopkSolve,
    "topk_vjp": TopkVjp,
}
"""Operator name -> its Protocol: ``backends.torch.<family>`` and ``backends.jax.<family>`` export each name."""
