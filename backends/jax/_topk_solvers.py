"""Solvers and closed-form VJPs of the relaxed top-k operators in JAX, on (B, n) rows.

The same algorithms as ``backends/torch/_topk_solvers.py`` (see its docstring and
``backends/topk.py``): the exact threshold (sort, prefix sums, two binary searches as
``lax.fori_loop``), Dykstra's projections (Algorithm 7.7) as one ``lax.while_loop`` with its stop
test inside, and the VJPs of Prop. 7.8 per block (segment sums, never an n x n matrix).
``select_threshold`` solves on the top ``k + m`` values of ``lax.top_k``; shapes are static, so
``m`` grows along a fixed ladder of widths, one ``lax.cond`` branch each, down to the full sort.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

from backends import topk as common

head_value = functools.partial(common.head_value, jnp)
head_slope = functools.partial(common.head_slope, jnp)
saturates_at = functools.partial(common.saturates_at, jnp)
pool = functools.partial(common.pool, jnp)


def _shifted(s: jax.Array, t: jax.Array) -> jax.Array:
    """``s - t`` for a float64 ``t`` (B, 1): in s's dtype, t split in two parts so no precision is lost."""
    if s.dtype == jnp.float64:
        return s - t
    hi = t.astype(s.dtype)
    return (s - hi) - (t - hi.astype(t.dtype)).astype(s.dtype)


def threshold_output(x: jax.Array, t: jax.Array, lam: float, e: int, op: str) -> jax.Array:
    """Forward output at threshold ``t`` (B, 1): ``min(a^e, 1)`` (mask), ``sign(x) min(a^e, Y(|x|))`` (mag).

    ``a = (s - t)_+ / lam``. For the magnitude, ``a^e >= Y(s)`` exactly when the element is
    saturated (``a^e >= t``), so the minimum picks the right branch.
    """
    s = x if op == "mask" else jnp.abs(x)
    a = jnp.maximum(_shifted(s, t) * (1.0 / lam), 0.0)
    if e == 3:
        a = a * a * a
    if op == "mask":
        return jnp.minimum(a, 1.0)
    return jnp.sign(x) * jnp.minimum(a, head_value(s, lam, e))


def threshold_parts(x: jax.Array, t: jax.Array, lam: float, e: int, op: str):
    """Output at threshold ``t`` (B, 1), with the saturated and pooled masks and ``(s - t)_+ / lam``."""
    s = x if op == "mask" else jnp.abs(x)
    a = jnp.maximum(_shifted(s, t) * (1.0 / lam), 0.0)
    ae = a if e == 1 else a * a * a
    if op == "mask":
        sat = ae >= 1.0
        return jnp.where(sat, jnp.ones_like(ae), ae), sat, (ae > 0) & ~sat, a
    sat = ae >= t.astype(x.dtype)
    y = jnp.where(sat, head_value(s, lam, e), ae)
    return jnp.sign(x) * y, sat, (ae > 0) & ~sat, a


def _searchsorted(rows: jax.Array, t: jax.Array, side: str) -> jax.Array:
    return jax.vmap(lambda a, v: jnp.searchsorted(a, v, side=side))(rows, t).astype(jnp.int64)


def saturation_level(t: jax.Array, lam: float, e: int, op: str) -> jax.Array:
    """The value from which an element saturates at threshold ``t``: ``U(s) >= t  <=>  s >= this``."""
    return t + lam if op == "mask" else t + lam * jnp.maximum(t, 0.0) ** (1.0 / e)


def solve_selected(top: jax.Array, k: int, lam: float, e: int, op: str) -> jax.Array:
    """``solve_threshold`` on the sorted selection ``top`` (B, k + m) whose window fits on the right.

    When every row's saturated end is inside ranks [k - a, k + m) (a = min(k, m)), the solve runs
    on those a + m values only (the same elements in the same order: the same t), else on all of them.
    """
    m = top.shape[1] - k
    a = min(k, m)
    if a == k:
        return solve_threshold(-top, k, lam, e, op)
    part = top[:, k - a :]
    left = jnp.all(part[:, 0] >= saturation_level(part[:, a - 1], lam, e, op))
    return lax.cond(left, lambda: solve_threshold(-part, a, lam, e, op), lambda: solve_threshold(-top, k, lam, e, op))


def select_margin(k: int, n: int) -> int:
    """The first margin ``m``: ``k / 16`` values beyond the k-th, at least 16 (about 6% more than ``top_k``)."""
    return max(16, k // 16)


def select_threshold(
    key: jax.Array,
    k: int,
    lam: float,
    e: int,
    op: str,
    *,
    margin: int | None = None,
    wide: float = 0.5,
    growth: int = 16,
) -> tuple[jax.Array, jax.Array | None, jax.Array | None]:
    """Threshold ``t`` (B, 1) float64 of the exact solution from the top ``k + m`` values of each row.

    As ``backends/torch/_topk_solvers.select_threshold``: the top ``k + m`` values (``lax.top_k``)
    hold the window of ``solve_threshold`` when their last one is not above ``U(s_k)``, and the
    solve on them equals the solve on the sorted row. Widths are static: ``m``, ``growth * m``,
    ... up to ``wide * n``, then the full sort; each width is one ``lax.cond`` branch, taken only
    when every row's window fits none of the narrower ones.

    Args:
        key: (B, n) rows (``x`` for the mask, ``|x|`` for the magnitude); 1 <= k <= n.
        lam, e, op: as for ``solve_threshold``. margin: the first ``m`` (default ``select_margin``).
        wide: the fraction of n from which the full sort is used. growth: the ratio of successive m.

    Returns:
        ``t`` (B, 1) float64, equal to ``solve_threshold`` on the fully sorted rows; the indices
        (B, k + m) of the first selection, largest first, and whether it solved every row (a bool
        scalar: then every element with ``s_i > t`` is among them); None and None when n is too
        small for a selection.
    """
    n = key.shape[1]
    m = select_margin(k, n) if margin is None else max(1, int(margin))
    widths = []
    while k + m < n and k + m < wide * n:
        widths.append(k + m)
        m *= growth

    def solve_from(level: int) -> jax.Array:
        if level == len(widths):
            return solve_threshold(jnp.sort(-key, axis=1), k, lam, e, op)
        return select(level)[0]

    def select(level: int) -> tuple[jax.Array, jax.Array, jax.Array]:
        top, index = lax.top_k(key, widths[level])
        fits = jnp.all(top[:, -1] <= saturates_at(top[:, k], lam, e, op))  # #{s_i > U(s_k)} < k + m
        t = lax.cond(fits, lambda: solve_selected(top, k, lam, e, op), lambda: solve_from(level + 1))
        return t, index, fits

    if not widths:
        return solve_from(0), None, None
    return select(0)


def solve_threshold(neg_s: jax.Array, k: int, lam: float, e: int, op: str, search: str | None = None) -> jax.Array:
    """Threshold ``t`` (B, 1) float64 of the exact solution, from ``neg_s`` (B, n): minus the rows sorted increasingly.

    The algorithm of ``backends/torch/_topk_solvers.solve_threshold``: t lies in (U(s_k), s_(k-1)),
    only the window [L, R) can pool; a binary search (``lax.fori_loop``) over the s_i counts the
    positive elements, one over the U_i the saturated ones; the pooled block is solved in closed
    form from sums (in float64, accumulated outwards from s_k) of window-clamped values centred at s_k.
    1 <= k <= n. ``search``: ``binary`` (the loops; CPU), ``all`` (every breakpoint at once, no
    loop; accelerators) or None (chosen per platform by ``lax.platform_dependent``).
    """
    B, n = neg_s.shape
    acc = jnp.float64

    def upper(s_val):  # U(s): where an element of value s saturates
        return saturates_at(s_val, lam, e, op)

    def count_at_least(level):  # #{s_i >= level}
        return _searchsorted(neg_s, -level, "right")

    def count_above(level):  # #{s_i > level}
        return _searchsorted(neg_s, -level, "left")

    s_k1 = -neg_s[:, k - 1 : k]
    L = jnp.minimum(
        count_at_least(saturation_level(s_k1, lam, e, op)), k - 1
    )  # < k but for |x| with zeros (t = 0 below)
    R = jnp.maximum(count_above(upper(-neg_s[:, k : k + 1])), k) if k < n else jnp.full_like(L, n)
    centre = -neg_s[:, min(k, n - 1) : min(k, n - 1) + 1]  # s_k: inside the pooled range, never an outlier
    c = centre.astype(acc)
    window_lo = jnp.take_along_axis(neg_s, L, 1)
    window_hi = jnp.take_along_axis(neg_s, R - 1, 1)
    u = -(jnp.clip(neg_s, window_lo, window_hi) + centre)  # s clamped to the window, centred at s_k
    powers = [u.astype(acc)]
    if e == 3:
        powers += [powers[0] ** 2, powers[0] ** 3]
    zero = jnp.zeros((B, 1), acc)
    # accumulated outwards from column k, so that a range sum never cancels a far (huge) value
    outwards = [
        (
            jnp.concatenate([zero, jnp.cumsum(v[:, k:], axis=1)], axis=1),  # [k, j) for j >= k
            jnp.concatenate([jnp.flip(jnp.cumsum(jnp.flip(v[:, :k], 1), axis=1), 1), zero], axis=1),
        )  # [j, k)
        for v in powers
    ]

    def sums(lo, hi):
        """Sums of u^j over [lo, hi) (0 when hi <= lo)."""
        out = []
        for up, down in outwards:

            def at(j, up=up, down=down):
                return jnp.where(
                    j >= k,
                    jnp.take_along_axis(up, jnp.clip(j - k, 0, n - k), 1),
                    -jnp.take_along_axis(down, jnp.clip(j, 0, k), 1),
                )

            out.append(jnp.where(hi > lo, at(hi) - at(lo), 0.0))
        return out

    def fits(t, lo, hi):
        """F(t) <= k, with elements [0, lo) saturated and [lo, hi) pooled."""
        m = jnp.maximum(hi - lo, 0).astype(acc)
        ta = t.astype(acc)
        d = ta - c
        S = sums(lo, hi)
        g = (S[0] - m * d) / lam if e == 1 else (S[2] - 3 * d * S[1] + 3 * d * d * S[0] - m * d**3) / lam**3
        if op == "mask":
            return lo.astype(acc) + g <= k
        return (ta > 0) & (lo.astype(acc) * ta + g <= k * ta)

    steps = math.ceil(math.log2(n + 1))

    def search_binary(_):
        def run(positive_side, lo, hi):
            def body(_, state):
                lo, hi = state
                live = hi - lo > 1
                mid = (lo + hi) // 2
                s_mid = -jnp.take_along_axis(neg_s, jnp.clip(mid - 1, 0, n - 1), 1)
                if positive_side:  # t = s[mid-1]: saturated are those with U >= t, pooled up to mid-1
                    ok = fits(s_mid, count_at_least(saturation_level(s_mid, lam, e, op)), mid - 1)
                else:  # t = U[mid-1]: the first mid are saturated, pooled while s > t
                    t = upper(s_mid)
                    ok = fits(t, mid, count_above(t))
                return jnp.where(live & ok, mid, lo), jnp.where(live & ~ok, mid, hi)

            return lax.fori_loop(0, steps, body, (lo, hi))[0]

        # positive count in [k, R] (F(s_(k-1)) <= k - 1); saturated count in [L, k] (F(U_k) >= k + 1)
        return run(True, jnp.full_like(L, k), R + 1), run(False, L, jnp.full_like(L, k + 1))

    def search_all(_):  # F at every breakpoint, the predicate holds on a prefix: count it
        j = jnp.broadcast_to(jnp.expand_dims(jnp.arange(1, n + 1, dtype=jnp.int64), 0), (B, n))
        s_all = -neg_s
        ok = fits(s_all, count_at_least(saturation_level(s_all, lam, e, op)), j - 1)
        positive = k + jnp.sum(ok & (j > k) & (j <= R), axis=1, keepdims=True)
        u_all = upper(s_all)
        ok = fits(u_all, j, count_above(u_all))
        return positive, L + jnp.sum(ok & (j > L) & (j <= k), axis=1, keepdims=True)

    if search == "binary":
        positive, saturated = search_binary(None)
    elif search == "all":
        positive, saturated = search_all(None)
    else:
        positive, saturated = lax.platform_dependent(None, cpu=search_binary, default=search_all)
    cnt = jnp.maximum(positive - saturated, 0).astype(acc)
    S = sums(saturated, positive)
    mu_u = S[0] / jnp.maximum(cnt, 1.0)
    m2 = m3 = jnp.zeros_like(mu_u)
    if e == 3:
        m2 = S[1] - cnt * mu_u * mu_u
        m3 = S[2] - 3 * mu_u * S[1] + 2 * cnt * mu_u**3
    t_block = pool(op, e, lam, cnt, (k - saturated).astype(acc), c + mu_u, m2, m3)
    if k < n:
        t_hard = -neg_s[:, k : k + 1].astype(acc)
    else:
        t_hard = -neg_s[:, n - 1 :].astype(acc) - lam if op == "mask" else jnp.zeros_like(t_block)
    t = jnp.where(cnt > 0, t_block, t_hard)
    if op == "mag":  # at most k non-zero |x_i|: all of them saturate, t = 0
        t = jnp.where(count_above(jnp.zeros_like(s_k1)) <= k, jnp.zeros_like(t), t)
    return t


def threshold_vjp(x: jax.Array, t: jax.Array, g: jax.Array, k: int, lam: float, e: int, op: str) -> jax.Array:
    """``J^T g`` of the threshold solution (Prop. 7.8 on the one pooled block), elementwise, O(n)."""
    y, sat, pooled, a = threshold_parts(x, t, lam, e, op)
    D = jnp.where(pooled, (e / lam) * a ** (e - 1), 0.0)
    h = g if op == "mask" else g * jnp.sign(x)
    SD = jnp.sum(D, axis=1, keepdims=True)
    SDh = jnp.sum(D * h, axis=1, keepdims=True)
    denom = SD if op == "mask" else SD + (k - jnp.sum(sat, axis=1, keepdims=True)).astype(x.dtype)
    mean = jnp.where(denom > 0, SDh / jnp.where(denom > 0, denom, 1.0), 0.0)
    out = D * (h - mean)
    if op == "mask":
        return out
    return jnp.where(sat, head_slope(y, lam, e) * g, jnp.sign(x) * out)


def _block_sum(values: jax.Array, bid: jax.Array) -> jax.Array:
    n = values.shape[1]
    sums = jax.vmap(lambda v, b: jax.ops.segment_sum(v, b, num_segments=n))(values, bid)
    return jnp.take_along_axis(sums, bid, 1)


def block_vjp(r: jax.Array, bid: jax.Array, h: jax.Array, k: int, lam: float, e: int, op: str) -> jax.Array:
    """``J^T h`` in sorted order for any block structure (PAV's, or the blocks Dykstra found).

    Args:
        r: (B, n) ``s - v``; bid: (B, n) int block index of each element; h: (B, n) cotangent in
            sorted order (times sign(x) for the magnitude).

    Returns:
        (B, n): per block B, ``D_i (h_i - sum_B D h / (sum_B D + [mag] sum_B w))`` with
        ``D_i = (e/lam) |r_i/lam|^(e-1)`` (Prop. 7.8 with lam; singletons give 0 or Y'(s)).
    """
    D = jnp.full_like(r, 1.0 / lam) if e == 1 else (e / lam) * (r / lam) ** 2
    SD = _block_sum(D, bid)
    SDh = _block_sum(D * h, bid)
    if op == "mag":
        w = jnp.broadcast_to((jnp.arange(r.shape[1]) < k).astype(r.dtype), r.shape)
        SD = SD + _block_sum(w, bid)
    return D * (h - jnp.where(SD > 0, SDh / jnp.where(SD > 0, SD, 1.0), 0.0))


def _half_step(v: jax.Array, d: jax.Array, offset: int, w: tuple | None) -> tuple[jax.Array, jax.Array]:
    """Dykstra's half-step (``backends.topk.pair_projection``) on ``v``'s pairs from ``offset``: (new v, new d)."""
    B, m = v.shape[0], d.shape[1]
    if m == 0:
        return v, d
    pair = v[:, offset : offset + 2 * m].reshape(B, m, 2)
    a, b, d = common.pair_projection(jnp, pair[..., 0], pair[..., 1], d, w)
    return v.at[:, offset : offset + 2 * m].set(jnp.stack([a, b], axis=-1).reshape(B, 2 * m)), d


def dykstra(target: jax.Array, c: jax.Array | None, max_iter: int, tol) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Dykstra's projection of ``target`` (B, n) onto the decreasing cone C1 ∩ C2 (Algorithm 7.7).

    One ``lax.while_loop`` (a pair's correction is one number: its two entries are +w_b d and
    -w_a d); stops after ``max_iter`` iterations or when max |v^(k+1) - v^k| <= tol. ``c`` (n,)
    weights the norm (magnitude operator) or None.

    Returns:
        ``v`` (B, n), the block index of each element (B, n) int32 (blocks: runs of adjacent pairs
        whose last correction is non-zero), and the iterations used (int32 scalar).
    """
    B, n = target.shape
    m1, m2 = n // 2, (n - 1) // 2
    w1 = w2 = None
    if c is not None:
        w1 = (jnp.expand_dims(c[0 : 2 * m1 : 2], 0), jnp.expand_dims(c[1 : 2 * m1 : 2], 0))
        w2 = (jnp.expand_dims(c[1 : 1 + 2 * m2 : 2], 0), jnp.expand_dims(c[2 : 2 + 2 * m2 : 2], 0))

    def cond(state):
        it, _, _, _, change = state
        return (it < max_iter) & (change > tol)

    def body(state):
        it, v, d1, d2, _ = state
        v_new, d1 = _half_step(v, d1, 0, w1)
        v_new, d2 = _half_step(v_new, d2, 1, w2)
        change = jnp.max(jnp.abs(v_new - v)) if v.size else jnp.zeros((), v.dtype)
        return it + 1, v_new, d1, d2, change

    init = (
        jnp.zeros((), jnp.int32),
        target,
        jnp.zeros((B, m1), target.dtype),
        jnp.zeros((B, m2), target.dtype),
        jnp.full((), jnp.inf, target.dtype),
    )
    it, v, d1, d2, _ = lax.while_loop(cond, body, init)
    link = jnp.zeros((B, n), bool)
    link = link.at[:, 0 : 2 * m1 : 2].set(d1 != 0)
    link = link.at[:, 1 : 1 + 2 * m2 : 2].set(d2 != 0)
    start = jnp.concatenate([jnp.ones((B, 1), jnp.int32), (~link[:, :-1]).astype(jnp.int32)], axis=1)
    return v, jnp.cumsum(start, axis=1) - 1, it
