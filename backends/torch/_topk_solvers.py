"""Solvers and closed-form VJPs of the relaxed top-k operators in torch, on (B, n) rows.

``backends/topk.py`` states the isotonic problem. With ``e = q - 1`` (1 for p = 2, 3 for
p = 4/3) and ``w = 1_k`` the exact solution pools one block around position k, so it is a clipped
threshold (t found by a sort, prefix sums and two binary searches over the breakpoints):

- mask: ``y_i = clip(((x_i - t)_+ / lam)^e, 0, 1)``, ``sum_i y_i = k``;
- magnitude: with ``s = |x|`` and ``a_i = ((s_i - t)_+ / lam)^e``, ``z_i = clip(a_i / t, 0, 1)``
  sums to k and ``y_i = sign(x_i) (a_i if z_i < 1 else Y(s_i))``, where ``Y(s)`` is the head
  singleton ``Y + lam Y^(p-1) = s`` (``s / (1 + lam)`` for p = 2).

The threshold depends only on the values near the k-th largest (the window of ``solve_threshold``),
so ``select_threshold`` solves on the top ``k + m`` values that ``torch.topk`` selects (unsorted; only
the few around rank k are sorted), growing ``m`` only for the rows whose window does not fit, and
sorts the rows whose window is wide.

Gradients are Prop. 7.8 with lam put back, applied per block (never an n x n matrix).
"""

from __future__ import annotations

import functools
import math

import torch

from backends import topk as common

head_value = functools.partial(common.head_value, torch)
head_slope = functools.partial(common.head_slope, torch)
saturates_at = functools.partial(common.saturates_at, torch)
pool = functools.partial(common.pool, torch)


def _shifted(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``s - t`` for a float64 ``t`` (B, 1): in s's dtype, t split in two parts so no precision is lost."""
    if s.dtype == torch.float64:
        return s - t
    hi = t.to(s.dtype)
    return (s - hi).sub_((t - hi.to(t.dtype)).to(s.dtype))


def threshold_output(x: torch.Tensor, t: torch.Tensor, lam: float, e: int, op: str) -> torch.Tensor:
    """Forward output at threshold ``t`` (B, 1): ``min(a^e, 1)`` (mask), ``sign(x) min(a^e, Y(|x|))`` (mag).

    ``a = (s - t)_+ / lam``. For the magnitude, ``a^e >= Y(s)`` exactly when the element is
    saturated (``a^e >= t``), so the minimum picks the right branch.
    """
    s = x if op == "mask" else x.abs()
    a = _shifted(s, t).mul_(1.0 / lam).clamp_(min=0.0)
    if e == 3:
        a = a * a * a
    if op == "mask":
        return a.clamp_(max=1.0)
    return torch.minimum(a, head_value(s, lam, e)).mul_(torch.sign(x))


def threshold_parts(x: torch.Tensor, t: torch.Tensor, lam: float, e: int, op: str):
    """Output at threshold ``t`` (B, 1), with the saturated and pooled masks and ``(s - t)_+ / lam``."""
    s = x if op == "mask" else x.abs()
    a = _shifted(s, t).mul_(1.0 / lam).clamp_(min=0.0)
    ae = a if e == 1 else a * a * a
    if op == "mask":
        sat = ae >= 1.0
        return torch.where(sat, torch.ones_like(ae), ae), sat, (ae > 0) & ~sat, a
    sat = ae >= t.to(x.dtype)
    y = torch.where(sat, head_value(s, lam, e), ae)
    return torch.sign(x) * y, sat, (ae > 0) & ~sat, a


def saturation_level(t: torch.Tensor, lam: float, e: int, op: str) -> torch.Tensor:
    """The value from which an element saturates at threshold ``t``: ``U(s) >= t  <=>  s >= this``."""
    return t + lam if op == "mask" else t + lam * t.clamp_min(0.0) ** (1.0 / e)


def select_margin(k: int, n: int) -> int:
    """The first margin ``m``: ``k / 16`` values beyond the k-th, at least 16 (about 6% more than ``topk``)."""
    return max(16, k // 16)


def sampled_margin(key: torch.Tensor, k: int, lam: float, e: int, op: str, stride: int = 64) -> int:
    """A first margin from every ``stride``-th value: twice the sampled window width, scaled up.

    The window (the values in ``(U(s_k), s_k]``) is counted in the sample's top ``k / stride``
    (about 1/64 of the cost of the selection); rows shorter than ``64 stride`` use ``select_margin``.
    """
    n = key.shape[1]
    base = select_margin(k, n)
    if n < 64 * stride or k < 4 * stride:
        return base
    sample = key[:, ::stride]
    ks = k // stride
    top = torch.topk(sample, min(sample.shape[1], 4 * ks), dim=1).values
    inside = (top[:, ks:] > saturates_at(top[:, ks : ks + 1], lam, e, op)).sum(1)
    return max(base, 2 * stride * (int(inside.max()) + 2))


def select_threshold(
    key: torch.Tensor, k: int, lam: float, e: int, op: str, *, margin: int | None = None, wide: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Threshold ``t`` (B, 1) float64 of the exact solution from the top ``k + m`` values of each row.

    ``solve_threshold`` reads only the window of values above ``U(s_k)`` (``s_k`` the (k+1)-th
    largest) and from ``level(s_(k-1))`` up: the top ``k + m`` values (``torch.topk`` unsorted, about
    half the cost of a sorted one) hold it when their last one is not above ``U(s_k)``; only their
    last ``a + m`` (ranks [k - a, k + m), a = min(k, m)) are then sorted, by a second small
    ``topk``, and when the first of them is at least ``level(s_(k-1))`` the solve on them (with k
    shifted to a) equals the solve on the full sorted row (the same elements in the same order). Rows whose window does not fit are selected again with a margin
    grown from the density of the values just below ``s_k``; rows (or all rows, once ``k + m``
    reaches ``wide * n``) are sorted in full as before.

    Args:
        key: (B, n) finite rows (``x`` for the mask, ``|x|`` for the magnitude); 1 <= k <= n.
        lam, e, op: as for ``solve_threshold``. margin: the first ``m`` (default ``sampled_margin``).
        wide: the fraction of n from which a full sort replaces the selection.

    Returns:
        ``t`` (B, 1) float64, equal to ``solve_threshold`` on the fully sorted rows, and the
        indices (B, k + m) int64 of the selected values, in no order, when one selection solved
        every row (every element with ``s_i > t``, i.e. every non-zero output, is among them),
        else None.
    """
    B, n = key.shape
    m = sampled_margin(key, k, lam, e, op) if margin is None else max(1, int(margin))
    t = torch.empty(B, 1, dtype=torch.float64, device=key.device)
    rows = None  # the rows still to solve (None: all of them)
    while True:
        part = key if rows is None else key.index_select(0, rows)
        width = k + m
        if width >= n or width >= wide * n:
            t_part = solve_threshold(torch.sort(-part, dim=1).values, k, lam, e, op)
            if rows is None:
                return t_part, None
            t[rows] = t_part
            return t, None
        # the selection unsorted (about half of a sorted topk's cost), then only its last a + m
        # values, ranks [k - a, k + m), sorted: they hold the window when it starts below rank k - a
        top, index = torch.topk(part, width, dim=1, sorted=False)
        a = min(k, m)
        tail = torch.topk(top, a + m, dim=1, largest=False).values.flip(1)  # decreasing
        s_k, last = tail[:, a : a + 1], tail[:, -1:]
        fit = last <= saturates_at(s_k, lam, e, op)  # #{s_i > U(s_k)} < k + m
        if a < k:  # and #{s_i >= level(s_(k-1))} > k - a: the saturated end is inside the tail too
            fit &= tail[:, :1] >= saturation_level(tail[:, a - 1 : a], lam, e, op)
        fit = fit.squeeze(1)
        if bool(fit.all()):
            t_part = solve_threshold(tail.neg_(), a, lam, e, op)
            if rows is None:
                return t_part, index
            t[rows] = t_part
            return t, None
        if bool(fit.any()):
            done = fit.nonzero().squeeze(1)
            t[done if rows is None else rows[done]] = solve_threshold(tail[done].neg_(), a, lam, e, op)
        miss = (~fit).nonzero().squeeze(1)
        rows = miss if rows is None else rows[miss]
        s_k, last = s_k[miss], last[miss]
        spread, need = (s_k - last).double(), (s_k - saturates_at(s_k, lam, e, op)).double()
        if bool((spread <= 0).any()):  # the k-th value repeats past k + m: no density to extrapolate
            m = n
        else:  # the (k + m - 1 - k) values below s_k span `spread`; the window needs `need`
            extra = float(((m - 1) * need / spread).max())
            m = max(4 * m, int(min(1.5 * extra, n)) + select_margin(k, n))


def solve_threshold(
    neg_s: torch.Tensor, k: int, lam: float, e: int, op: str, search: str | None = None
) -> torch.Tensor:
    """Threshold ``t`` (B, 1) float64 of the exact solution, from ``neg_s`` (B, n): minus the rows sorted increasingly.

    With ``s = -neg_s`` sorted decreasingly, F(t) (the mask's sum, or the sum of z for the
    magnitude) falls with t and has breakpoints at the s_i (an element turns positive) and the U_i
    (it saturates: s_i - lam, or Y(s_i)); t lies in (U(s_k), s_(k-1)) (0-based), so only the
    elements of the window [L, R) with U_i < s_(k-1) and s_i > U(s_k) can pool. One binary search
    over the s_i finds how many elements are positive, one over the U_i how many are saturated, and
    the pooled block between them is solved in closed form. Sums accumulate in float64, outwards
    from s_k, over values clamped to the window and centred at s_k, so they do not cancel. 1 <= k <= n.
    ``search``: ``binary`` (two loops of log2(n) small steps; the CPU default) or ``all`` (every
    breakpoint tested at once, a few kernels and no loop; the default on accelerators).
    """
    B, n = neg_s.shape
    search = search or ("binary" if neg_s.device.type == "cpu" else "all")
    acc = torch.float64

    def upper(s_val: torch.Tensor) -> torch.Tensor:  # U(s): where an element of value s saturates
        return saturates_at(s_val, lam, e, op)

    def count_at_least(level: torch.Tensor) -> torch.Tensor:  # #{s_i >= level}
        return torch.searchsorted(neg_s, -level, right=True)

    def count_above(level: torch.Tensor) -> torch.Tensor:  # #{s_i > level}
        return torch.searchsorted(neg_s, -level, right=False)

    s_k1 = -neg_s[:, k - 1 : k]
    L = count_at_least(saturation_level(s_k1, lam, e, op)).clamp_max(k - 1)  # < k but for |x| with zeros (t = 0 below)
    R = count_above(upper(-neg_s[:, k : k + 1])).clamp_min(k) if k < n else torch.full_like(L, n)
    centre = -neg_s[:, min(k, n - 1) : min(k, n - 1) + 1]  # s_k: inside the pooled range, never an outlier
    c = centre.to(acc)
    # sums over the columns [first, last) that hold every row's window (the CPU reads its bounds;
    # elsewhere the whole row, without a host synchronisation), accumulated outwards from column k
    # so that a range sum never cancels a far (e.g. huge saturated) value
    first, last = (int(L.min()), int(R.max())) if search == "binary" else (0, n)
    u = neg_s[:, first:last].clamp(min=neg_s.gather(1, L), max=neg_s.gather(1, R - 1)).add_(centre).neg_()
    powers = [u.to(acc)]
    if e == 3:
        powers += [powers[0] ** 2, powers[0] ** 3]
    split = k - first
    zero = torch.zeros(B, 1, dtype=acc, device=neg_s.device)
    outwards = [
        (
            torch.cat([zero, torch.cumsum(v[:, split:], dim=1)], dim=1),  # [k, j) for j >= k
            torch.cat([torch.cumsum(v[:, :split].flip(1), dim=1).flip(1), zero], dim=1),
        )  # [j, k)
        for v in powers
    ]

    def sums(lo: torch.Tensor, hi: torch.Tensor) -> list[torch.Tensor]:
        """Sums of u^j over [lo, hi) (0 when hi <= lo), for first <= lo, hi <= last."""
        out = []
        for up, down in outwards:

            def at(j: torch.Tensor, up=up, down=down) -> torch.Tensor:
                return torch.where(
                    j >= k, up.gather(1, (j - k).clamp(0, last - k)), -down.gather(1, (j - first).clamp(0, split))
                )

            out.append(torch.where(hi > lo, at(hi) - at(lo), 0.0))
        return out

    def fits(t: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        """F(t) <= k, with elements [0, lo) saturated and [lo, hi) pooled."""
        m = (hi - lo).clamp_min(0).to(acc)
        ta = t.to(acc)
        d = ta - c
        S = sums(lo, hi)
        g = (S[0] - m * d) / lam if e == 1 else (S[2] - 3 * d * S[1] + 3 * d * d * S[0] - m * d**3) / lam**3
        if op == "mask":
            return lo.to(acc) + g <= k
        return (ta > 0) & (lo.to(acc) * ta + g <= k * ta)

    if search == "all":  # F at every breakpoint, the predicate holds on a prefix: count it
        j = torch.arange(1, n + 1, device=neg_s.device).unsqueeze(0).expand(B, n)
        s_all = -neg_s
        ok = fits(s_all, count_at_least(saturation_level(s_all, lam, e, op)), j - 1)
        positive = k + (ok & (j > k) & (j <= R)).sum(1, keepdim=True)
        u_all = upper(s_all)
        ok = fits(u_all, j, count_above(u_all))
        saturated = L + (ok & (j > L) & (j <= k)).sum(1, keepdim=True)
    else:
        steps = math.ceil(math.log2(int((R - L).max()) + 2))  # both searches stay inside [L, R]
        counts = []
        # positive count in [k, R] (F(s_(k-1)) <= k - 1); saturated count in [L, k] (F(U_k) >= k + 1)
        for positive_side, lo, hi in ((True, torch.full_like(L, k), R + 1), (False, L, torch.full_like(L, k + 1))):
            for _ in range(steps):
                live = hi - lo > 1
                mid = (lo + hi) // 2
                s_mid = -neg_s.gather(1, (mid - 1).clamp(0, n - 1))
                if positive_side:  # t = s[mid-1]: saturated are those with U >= t, pooled up to mid-1
                    ok = fits(s_mid, count_at_least(saturation_level(s_mid, lam, e, op)), mid - 1)
                else:  # t = U[mid-1]: the first mid are saturated, pooled while s > t
                    t = upper(s_mid)
                    ok = fits(t, mid, count_above(t))
                lo = torch.where(live & ok, mid, lo)
                hi = torch.where(live & ~ok, mid, hi)
            counts.append(lo)
        positive, saturated = counts
    cnt = (positive - saturated).clamp_min(0).to(acc)
    S = sums(saturated, positive)
    mu_u = S[0] / cnt.clamp_min(1.0)
    m2 = m3 = torch.zeros_like(mu_u)
    if e == 3:
        m2 = S[1] - cnt * mu_u * mu_u
        m3 = S[2] - 3 * mu_u * S[1] + 2 * cnt * mu_u**3
    t_block = pool(op, e, lam, cnt, (k - saturated).to(acc), c + mu_u, m2, m3)
    if k < n:
        t_hard = -neg_s[:, k : k + 1].to(acc)
    else:
        t_hard = -neg_s[:, -1:].to(acc) - lam if op == "mask" else torch.zeros_like(t_block)
    t = torch.where(cnt > 0, t_block, t_hard)
    if op == "mag":  # at most k non-zero |x_i|: all of them saturate, t = 0
        t = torch.where(count_above(torch.zeros_like(s_k1)) <= k, torch.zeros_like(t), t)
    return t


def threshold_vjp(
    x: torch.Tensor,
    t: torch.Tensor,
    g: torch.Tensor,
    k: int,
    lam: float,
    e: int,
    op: str,
    y: torch.Tensor | None = None,
) -> torch.Tensor:
    """``J^T g`` of the threshold solution (Prop. 7.8 on the one pooled block), elementwise, O(n).

    ``y``: the forward output at ``t`` when at hand (it saves the magnitude's head values).
    """
    if y is None:
        y, sat, pooled, a = threshold_parts(x, t, lam, e, op)
    else:
        s = x if op == "mask" else x.abs()
        a = _shifted(s, t).mul_(1.0 / lam).clamp_(min=0.0)
        ae = a if e == 1 else a * a * a
        sat = ae >= (1.0 if op == "mask" else t.to(x.dtype))
        pooled = (ae > 0) & ~sat
    D = torch.where(pooled, (e / lam) * a ** (e - 1), 0.0)
    h = g if op == "mask" else g * torch.sign(x)
    SD = D.sum(1, keepdim=True)
    SDh = (D * h).sum(1, keepdim=True)
    denom = SD if op == "mask" else SD + (k - sat.sum(1, keepdim=True)).to(x.dtype)
    mean = torch.where(denom > 0, SDh / torch.where(denom > 0, denom, 1.0), 0.0)
    out = D * (h - mean)
    if op == "mask":
        return out
    return torch.where(sat, head_slope(y, lam, e) * g, torch.sign(x) * out)


def block_vjp(r: torch.Tensor, bid: torch.Tensor, h: torch.Tensor, k: int, lam: float, e: int, op: str) -> torch.Tensor:
    """``J^T h`` in sorted order for any block structure (PAV's, or the blocks Dykstra found).

    Args:
        r: (B, n) ``s - v``; bid: (B, n) int64 block index of each element; h: (B, n) cotangent
            in sorted order (times sign(x) for the magnitude).

    Returns:
        (B, n): per block B, ``D_i (h_i - sum_B D h / (sum_B D + [mag] sum_B w))`` with
        ``D_i = (e/lam) |r_i/lam|^(e-1)`` (Prop. 7.8 with lam; singletons give 0 or Y'(s)).
    """
    D = torch.full_like(r, 1.0 / lam) if e == 1 else (e / lam) * (r / lam) ** 2
    SD = torch.zeros_like(r).scatter_add_(1, bid, D).gather(1, bid)
    SDh = torch.zeros_like(r).scatter_add_(1, bid, D * h).gather(1, bid)
    if op == "mag":
        w = (torch.arange(r.shape[1], device=r.device) < k).to(r.dtype).expand_as(r)
        SD = SD + torch.zeros_like(r).scatter_add_(1, bid, w).gather(1, bid)
    return D * (h - torch.where(SD > 0, SDh / torch.where(SD > 0, SD, 1.0), 0.0))


def _half_step(v: torch.Tensor, d: torch.Tensor, offset: int, w: tuple | None) -> torch.Tensor:
    """Dykstra's half-step (``backends.topk.pair_projection``) in place on ``v``'s pairs from ``offset``; the new ``d``."""
    B, m = v.shape[0], d.shape[1]
    pair = v[:, offset : offset + 2 * m].view(B, m, 2)
    return common.pair_projection(torch, pair[..., 0], pair[..., 1], d, w)[2]


def dykstra(
    target: torch.Tensor, c: torch.Tensor | None, max_iter: int, tol: float, check_every: int = 10
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Dykstra's projection of ``target`` (B, n) onto the decreasing cone C1 ∩ C2 (Algorithm 7.7).

    A plain eager loop of in-place updates (a pair's correction is one number: its two entries
    are +w_b d and -w_a d), with one host synchronisation every ``check_every`` iterations for the
    stop test max |v^(k+1) - v^k| <= tol. ``c`` (n,) weights the norm (magnitude operator) or None.

    Returns:
        ``v`` (B, n), the block index of each element (B, n) int64 (blocks: runs of adjacent pairs
        whose last correction is non-zero, i.e. whose constraint is active), iterations used.
    """
    B, n = target.shape
    v = target.clone()
    d1 = torch.zeros(B, n // 2, dtype=v.dtype, device=v.device)
    d2 = torch.zeros(B, (n - 1) // 2, dtype=v.dtype, device=v.device)
    w1 = w2 = None
    if c is not None:
        w1 = (c[0 : 2 * d1.shape[1] : 2], c[1 : 2 * d1.shape[1] : 2])
        w2 = (c[1 : 1 + 2 * d2.shape[1] : 2], c[2 : 2 + 2 * d2.shape[1] : 2])
    it = 0
    while it < max_iter:
        it += 1
        check = it % check_every == 0 or it == max_iter
        before = v.clone() if check else None
        d1 = _half_step(v, d1, 0, w1)
        d2 = _half_step(v, d2, 1, w2)
        if check and (float((v - before).abs().max()) if v.numel() else 0.0) <= tol:
            break
    link = torch.zeros(B, n, dtype=torch.bool, device=v.device)
    link[:, 0 : 2 * d1.shape[1] : 2] = d1 != 0  # pair (i, i+1), i even: C1
    link[:, 1 : 1 + 2 * d2.shape[1] : 2] = d2 != 0  # i odd: C2
    start = torch.ones(B, n, dtype=torch.int64, device=v.device)
    start[:, 1:] = (~link[:, :-1]).to(torch.int64)
    return v, torch.cumsum(start, dim=1) - 1, it
