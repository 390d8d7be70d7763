"""Relaxed top-k operators: exact against oracles that share no code, solvers against each other,
torch against JAX, edge cases (thesis 7.3-7.5, appendix 7.A.6, 7.B.2)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.optimize

import backends
from tests.helpers import assert_close

P43 = 4.0 / 3.0
OPS_ = ("mask", "mag")


def _op(backend: str, op: str):
    ops = backends.get(backend).ops
    return ops.topk_mask if op == "mask" else ops.topk_mag


def _arr(backend: str, a: np.ndarray, dtype: str = "float64"):
    b = backends.get(backend)
    return b.asarray(np.asarray(a), b.device("cpu"), dtype)


def _np(backend: str, y) -> np.ndarray:
    return backends.get(backend).to_numpy(y)


def block_oracle(x: np.ndarray, k: int, lam: float, p: float, op: str) -> np.ndarray:
    """Exact output of one row by enumerating every partition of the sorted row into blocks.

    Independent of the code under test: each block value is the root of the block's derivative
    (scipy brentq on sum_B h_i'), the partition kept is the feasible one (decreasing block values)
    of least objective sum_i h_i(v_i), and y = grad R*(s - v) (thesis 7.5, eq. 7.5-7.6).
    """
    q = p / (p - 1.0)
    a = x if op == "mask" else np.abs(x)
    order = np.argsort(-a, kind="stable")
    s, n = a[order], len(a)
    w = (np.arange(n) < k).astype(float)
    phi = (lambda v: v) if op == "mask" else (lambda v: v * v / 2)
    dphi = (lambda v: 1.0) if op == "mask" else (lambda v: v)

    def h(i, v):
        return lam / q * abs((s[i] - v) / lam) ** q + w[i] * phi(v)

    def gamma(block):
        def d(g):
            return sum(-np.sign(s[i] - g) * abs((s[i] - g) / lam) ** (q - 1) + w[i] * dphi(g) for i in block)

        span = 10.0 * (1.0 + lam) + np.ptp(s)
        return scipy.optimize.brentq(d, s.min() - span, s.max() + span, xtol=1e-15, rtol=1e-15, maxiter=500)

    best, best_v = np.inf, None
    for cuts in itertools.product([False, True], repeat=n - 1):
        edges = [0] + [i + 1 for i, c in enumerate(cuts) if c] + [n]
        blocks = [range(edges[j], edges[j + 1]) for j in range(len(edges) - 1)]
        vals = [gamma(b) for b in blocks]
        if any(vals[j] < vals[j + 1] for j in range(len(vals) - 1)):
            continue
        v = np.concatenate([np.full(len(b), g) for b, g in zip(blocks, vals)])
        obj = sum(h(i, v[i]) for i in range(n))
        if obj < best:
            best, best_v = obj, v
    r = s - best_v
    y = np.empty(n)
    y[order] = np.sign(r) * np.abs(r / lam) ** (q - 1)
    return y if op == "mask" else np.sign(x) * y


def primal_mask_oracle(x: np.ndarray, k: int, lam: float, p: float) -> np.ndarray:
    """The mask from its definition, max <x, y> - (lam/p) sum |y|^p over the capped simplex (SLSQP)."""
    n = len(x)
    res = scipy.optimize.minimize(
        lambda y: -(x @ y) + lam / p * np.sum(np.abs(y) ** p),
        np.full(n, k / n),
        jac=lambda y: -x + lam * np.sign(y) * np.abs(y) ** (p - 1),
        bounds=[(0.0, 1.0)] * n,
        constraints=[{"type": "eq", "fun": lambda y: y.sum() - k, "jac": lambda y: np.ones(n)}],
        method="SLSQP",
        options={"ftol": 1e-15, "maxiter": 1000},
    )
    return res.x


def _rows(seed: int, shape: tuple[int, ...], ties: bool = False) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal(shape)
    return np.round(x * 2) / 2 if ties else x


SOLVERS = [("threshold", 2.0), ("pav", 2.0), ("threshold", P43), ("pav", P43)]


@pytest.mark.parametrize("op", OPS_)
@pytest.mark.parametrize("solver,p", SOLVERS)
def test_exact_solvers_match_block_enumeration(op, solver, p):
    for seed, (n, k, lam) in enumerate([(6, 2, 0.3), (7, 3, 1.5), (5, 1, 0.05), (7, 4, 3.0), (6, 3, 0.7)]):
        x = _rows(seed, (n,), ties=seed == 4)
        y = _np("torch", _op("torch", op)(_arr("torch", x), k, lam=lam, p=p, solver=solver))
        assert_close(y, block_oracle(x, k, lam, p, op), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("p", [2.0, P43])
def test_mask_matches_its_definition_over_the_capped_simplex(p):
    for seed, (n, k, lam) in enumerate([(8, 3, 0.5), (10, 2, 0.2), (6, 5, 2.0)]):
        x = _rows(10 + seed, (n,))
        y = _np("torch", _op("torch", "mask")(_arr("torch", x), k, lam=lam, p=p))
        assert_close(y, primal_mask_oracle(x, k, lam, p), rtol=1e-5, atol=1e-5)


def test_magnitude_without_pooling_is_x_over_one_plus_lam():
    """Thesis 7.A.6: well-separated values give singleton blocks, y = w x / (lam w + 1)."""
    x = np.array([[5.0, -4.0, 0.1, 3.0, -0.2, 0.05]])
    y = _np("torch", _op("torch", "mag")(_arr("torch", x), 3, lam=0.1))
    expected = np.where(np.abs(x) >= 3.0, x / 1.1, 0.0)
    assert_close(y, expected)
    hard = _np("torch", backends.get("torch").ops.hard_topk_mag(_arr("torch", x), 3))
    assert np.max(np.abs(y - hard)) <= 0.1 * np.max(np.abs(x))  # the bound of 7.5


@pytest.mark.parametrize("op", OPS_)
@pytest.mark.parametrize("p", [2.0, P43])
def test_threshold_equals_pav_on_large_rows(op, p):
    for seed, (n, lam) in enumerate([(10_000, 0.01), (10_000, 1.0), (3_000, 0.1), (257, 30.0)]):
        x = _rows(20 + seed, (3, n), ties=seed == 2)
        k = int(np.ceil(n / 10)) if seed != 3 else 200
        f = _op("torch", op)
        a = _np("torch", f(_arr("torch", x), k, lam=lam, p=p))
        b = _np("torch", f(_arr("torch", x), k, lam=lam, p=p, solver="pav"))
        assert_close(a, b, rtol=1e-9, atol=1e-9)
        if op == "mask":
            assert_close(a.sum(-1), np.full(3, k), rtol=1e-9, atol=1e-9)
        if lam <= 0.1:
            assert np.mean(a == 0) > 0.5  # exactly sparse


@pytest.mark.parametrize("backend", ["torch", "jax"])
@pytest.mark.parametrize("op", OPS_)
def test_converged_dykstra_equals_pav(backend, op):
    x = _rows(30, (3, 16))
    f = _op(backend, op)
    exact = _np(backend, f(_arr(backend, x), 4, lam=0.5, solver="pav"))
    y = _np(backend, f(_arr(backend, x), 4, lam=0.5, solver="dykstra", max_iter=20_000, tol=0.0))
    assert_close(y, exact, rtol=1e-10, atol=1e-10)
    y, it = backends.get(backend).ops.topk_solve(_arr(backend, x), 4, op=op, lam=0.5, solver="dykstra")
    assert 0 < it < 1000 and np.max(np.abs(_np(backend, y) - exact)) < 1e-9  # the default tol stops it converged


@pytest.mark.parametrize("op", OPS_)
@pytest.mark.parametrize("solver,p", SOLVERS + [("dykstra", 2.0)])
def test_torch_and_jax_agree(op, solver, p):
    x = _rows(40, (2, 3, 16), ties=True) + _rows(41, (2, 3, 16)) * 1e-3
    kw = dict(lam=0.4, p=p, solver=solver) | (dict(max_iter=50) if solver == "dykstra" else {})
    yt = _np("torch", _op("torch", op)(_arr("torch", x), 4, **kw))
    yj = _np("jax", _op("jax", op)(_arr("jax", x), 4, **kw))
    assert yt.shape == x.shape
    assert_close(yt, yj)


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_hard_operators(backend):
    ops = backends.get(backend).ops
    x = np.array([[0.3, -2.0, 1.0, 0.5, -0.1]])
    assert_close(_np(backend, ops.hard_topk_mask(_arr(backend, x), 2)), [[0, 0, 1, 1, 0]])
    assert_close(_np(backend, ops.hard_topk_mag(_arr(backend, x), 2)), [[0, -2.0, 1.0, 0, 0]])
    assert_close(_np(backend, ops.hard_topk_mask(_arr(backend, x), 0)), np.zeros_like(x))


JAX_PAV_SLOW = pytest.param("jax", "pav", marks=pytest.mark.slow)  # the PAV kernel is shared with torch


@pytest.mark.parametrize(
    "backend,solver",
    [
        ("torch", "threshold"),
        ("torch", "pav"),
        ("torch", "dykstra"),
        ("jax", "threshold"),
        JAX_PAV_SLOW,
        ("jax", "dykstra"),
    ],
)
def test_edge_cases_k0_kn_n1_and_ties(backend, solver):
    mask, mag = _op(backend, "mask"), _op(backend, "mag")
    x = _rows(50, (2, 16))
    kw = dict(lam=0.5, solver=solver)
    assert np.all(_np(backend, mask(_arr(backend, x), 0, **kw)) == 0)
    assert np.all(_np(backend, mag(_arr(backend, x), 0, **kw)) == 0)
    assert_close(_np(backend, mask(_arr(backend, x), 16, **kw)), np.ones_like(x))
    assert_close(_np(backend, mag(_arr(backend, x), 16, **kw)), x / 1.5)  # every element saturates: x/(1+lam)
    one = np.array([[0.7], [-2.0]])
    assert_close(_np(backend, mask(_arr(backend, one), 1, **kw)), np.ones_like(one))
    assert np.all(_np(backend, mask(_arr(backend, one), 0, **kw)) == 0)
    ties = np.full((2, 16), 0.25)
    assert_close(_np(backend, mask(_arr(backend, ties), 4, **kw)), np.full_like(ties, 4 / 16), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_magnitude_with_fewer_than_k_nonzeros_keeps_them_all(backend):
    x = np.array([[0.0, 2.0, 0.0, -1.0, 0.0, 0.0]])
    for solver in ("threshold", "pav"):
        y = _np(backend, _op(backend, "mag")(_arr(backend, x), 3, lam=0.5, solver=solver))
        assert_close(y, x / 1.5)


@pytest.mark.parametrize(
    "backend,solver",
    [
        ("torch", "threshold"),
        ("torch", "pav"),
        ("torch", "dykstra"),
        ("jax", "threshold"),
        JAX_PAV_SLOW,
        pytest.param("jax", "dykstra", marks=pytest.mark.slow),
    ],
)
def test_non_finite_and_integer_inputs_raise(backend, solver):
    for bad in (np.nan, np.inf, -np.inf):
        x = _rows(60, (2, 8))
        x[1, 3] = bad
        for op in OPS_:
            with pytest.raises(ValueError, match="NaN or"):
                _op(backend, op)(_arr(backend, x), 3, solver=solver)
    with pytest.raises(ValueError, match="dtype"):
        _op(backend, "mask")(_arr(backend, np.arange(8).reshape(1, 8), "int64"), 3, solver=solver)


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_bad_arguments_name_the_field(backend):
    x = _arr(backend, _rows(70, (2, 8)))
    mask = _op(backend, "mask")
    for kwargs, match in [
        (dict(k=9), "k=9"),
        (dict(k=-1), "k=-1"),
        (dict(k=2.5), "k=2.5"),
        (dict(k=2, lam=0.0), "lam=0.0"),
        (dict(k=2, p=1.5), "p=1.5"),
        (dict(k=2, solver="sinkhorn"), "solver='sinkhorn'"),
        (dict(k=2, max_iter=10), "max_iter=10"),
        (dict(k=2, solver="dykstra", p=P43), "p=4/3|p=1.33"),
        (dict(k=2, solver="dykstra", max_iter=0), "max_iter=0"),
    ]:
        with pytest.raises(ValueError, match=match):
            mask(x, **kwargs)


@pytest.mark.parametrize("backend", ["torch", pytest.param("jax", marks=pytest.mark.slow)])
def test_float32_and_half_inputs_keep_their_dtype_and_precision(backend):
    x = _rows(80, (4, 3000))
    ref = _np(backend, _op(backend, "mask")(_arr(backend, x.astype(np.float32).astype(np.float64)), 300, lam=0.01))
    y32 = _op(backend, "mask")(_arr(backend, x, "float32"), 300, lam=0.01)
    assert str(y32.dtype).endswith("float32")
    assert np.max(np.abs(_np(backend, y32) - ref)) < 2e-6  # eps32 |x| / lam would be 1e-5: t is kept in two parts
    y16 = _op(backend, "mask")(_arr(backend, x, "bfloat16"), 300, lam=0.1)
    assert str(y16.dtype).endswith("bfloat16")


def test_jax_operators_jit_and_vmap():
    import jax
    import jax.numpy as jnp

    ops = backends.get("jax").ops
    x = jnp.asarray(_rows(90, (3, 16)))
    eager = ops.topk_mask(x, 4, lam=0.4)
    assert_close(jax.jit(lambda a: ops.topk_mask(a, 4, lam=0.4))(x), eager)
    assert_close(jax.vmap(lambda a: ops.topk_mask(a, 4, lam=0.4, solver="pav"))(x), eager, rtol=1e-12, atol=1e-12)


def test_pav_kernel_without_numba_matches_compiled(monkeypatch):
    """The plain-Python PAV (what runs where numba is absent) is the same code as the compiled one."""
    from backends import topk as topk_common

    s = -np.sort(-_rows(95, (2, 40)), axis=-1)
    compiled = topk_common.pav(s, 5, 0.3, 3, "mag")
    if not topk_common.HAVE_NUMBA:
        pytest.skip("numba absent: only the Python kernel exists")
    for fn in ("_cubic_root", "_pool", "_pav_row", "_pav_rows"):
        monkeypatch.setattr(topk_common, fn, getattr(topk_common, fn).py_func)
    python = topk_common.pav(s, 5, 0.3, 3, "mag")
    assert_close(python[0], compiled[0], rtol=1e-13, atol=1e-13)
    np.testing.assert_array_equal(python[1], compiled[1])


@pytest.mark.parametrize("backend", ["torch", pytest.param("jax", marks=pytest.mark.slow)])
def test_accelerator_search_matches_cpu_binary_search(backend):
    """The loop-free search (every breakpoint at once, used on GPU/TPU) finds the same operator."""
    import importlib

    solvers = importlib.import_module(f"backends.{backend}._topk_solvers")

    def output(x, neg, k, lam, e, op, search):
        return solvers.threshold_output(x, solvers.solve_threshold(neg, k, lam, e, op, search), lam, e, op)

    if backend == "jax":
        import jax

        output = jax.jit(output, static_argnums=(2, 3, 4, 5, 6))
    rng = np.random.default_rng(99)
    x = np.round(rng.standard_normal((4, 64)) * 4) / 4  # ties
    x[0, :32] = 0.0
    x[1] *= 100.0
    for k, lam, e, op in [(5, 0.1, 1, "mask"), (60, 0.02, 3, "mask"), (1, 3.0, 1, "mag"), (40, 0.5, 3, "mag")]:
        neg = _arr(backend, np.sort(-(x if op == "mask" else np.abs(x)), axis=1))
        ys = [_np(backend, output(_arr(backend, x), neg, k, lam, e, op, s)) for s in ("binary", "all")]
        assert_close(ys[0], ys[1], rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# Threshold by selection (issue 19): the top k + m values solve every row exactly as the full sort
# ----------------------------------------------------------------------------------------------


def _selection_rows(n: int = 2000) -> np.ndarray:
    """Random, tied, constant and adversarial rows: one huge outlier, mostly zeros, two tied levels."""
    rng = np.random.default_rng(123)
    x = rng.standard_normal((7, n))
    x[1] = np.round(x[1] * 2) / 2  # ties everywhere, a tie group across the k-th value
    x[2] = 0.3  # all equal: the window is the whole row
    x[3, 17] = 1e6  # one huge outlier
    x[4, : n - 50] = 0.0  # fewer non-zeros than k for the magnitude
    x[5] = np.where(rng.random(n) < 0.5, 1.0, -1.0)  # two values
    x[6] = rng.standard_normal(n) * 1e-3 + 5.0
    return x


def _sort_solution(backend: str, x: np.ndarray, k: int, lam: float, p: float, op: str, g: np.ndarray):
    """Output and J^T g from the full sort (``solve_threshold`` on every sorted value): the reference."""
    import importlib

    solvers = importlib.import_module(f"backends.{backend}._topk_solvers")
    e = 1 if p == 2.0 else 3
    if k == 0:
        return np.zeros_like(x), np.zeros_like(x)
    if backend == "torch":
        import torch

        xt, gt = torch.from_numpy(x), torch.from_numpy(g)
        key = xt if op == "mask" else xt.abs()
        t = solvers.solve_threshold(torch.sort(-key, dim=1).values, k, lam, e, op)
        return (
            solvers.threshold_output(xt, t, lam, e, op).numpy(),
            solvers.threshold_vjp(xt, t, gt, k, lam, e, op).numpy(),
        )
    import jax.numpy as jnp

    xj, gj = jnp.asarray(x), jnp.asarray(g)
    key = xj if op == "mask" else jnp.abs(xj)
    t = solvers.solve_threshold(jnp.sort(-key, axis=1), k, lam, e, op)
    return (
        np.asarray(solvers.threshold_output(xj, t, lam, e, op)),
        np.asarray(solvers.threshold_vjp(xj, t, gj, k, lam, e, op)),
    )


SELECTION_GRID = [(k, lam) for k in (0, 1, 100, 1999, 2000) for lam in (0.01, 1.0)]
JAX_SELECTION_GRID = [(1, 0.01), (100, 0.01), (100, 1.0), (2000, 0.1)]


def _selection_cases():
    """Every torch case; JAX compiles each case, so its p = 4/3 and wide-window cases are slow."""
    cases = [("torch", op, p, k, lam) for op in OPS_ for p in (2.0, P43) for k, lam in SELECTION_GRID]
    for op, p, (k, lam) in itertools.product(OPS_, (2.0, P43), JAX_SELECTION_GRID):
        quick = p == 2.0 and (k, lam) in JAX_SELECTION_GRID[:2]
        cases.append(pytest.param("jax", op, p, k, lam, marks=() if quick else pytest.mark.slow))
    return cases


@pytest.mark.parametrize("backend,op,p,k,lam", _selection_cases())
def test_selection_equals_the_full_sort_forward_and_backward(backend, op, p, k, lam):
    x = _selection_rows()
    g = np.random.default_rng(5).standard_normal(x.shape)
    ops = backends.get(backend).ops
    y, grad = ops.topk_vjp(_arr(backend, x), k, _arr(backend, g), op=op, lam=lam, p=p)
    y_ref, grad_ref = _sort_solution(backend, x, k, lam, p, op, g)
    assert_close(_np(backend, y), y_ref, rtol=0, atol=1e-12 * max(1.0, np.abs(y_ref).max()))
    assert_close(_np(backend, grad), grad_ref, rtol=0, atol=1e-12 * max(1.0, np.abs(grad_ref).max()))
    if 0 < k < x.shape[1] and op == "mask":
        assert_close(_np(backend, y).sum(1), np.full(len(x), k), rtol=0, atol=1e-9)


@pytest.mark.parametrize("backend", ["torch", "jax"])
@pytest.mark.parametrize("op", OPS_)
@pytest.mark.parametrize("p", [2.0, P43])
def test_selection_grows_its_window_until_it_fits(backend, op, p):
    """From a margin of one value, rows whose window is wider are selected again (or sorted): same t."""
    import importlib

    solvers = importlib.import_module(f"backends.{backend}._topk_solvers")
    x = _selection_rows(600)
    e = 1 if p == 2.0 else 3
    for k, lam in [(60, 0.01), (60, 0.5), (1, 3.0)]:
        if backend == "torch":
            import torch

            key = torch.from_numpy(x if op == "mask" else np.abs(x))
            t_ref = solvers.solve_threshold(torch.sort(-key, dim=1).values, k, lam, e, op).numpy()
            t, index = solvers.select_threshold(key, k, lam, e, op, margin=1)
            if lam == 0.01:  # a narrow window: one selection solves the random row
                wide_t, wide_index = solvers.select_threshold(key[:1], k, lam, e, op, margin=100)
                assert wide_index is not None and wide_index.shape == (1, k + 100)
                assert_close(wide_t.numpy(), t_ref[:1], rtol=0, atol=1e-12 * max(1.0, np.abs(t_ref).max()))
        else:
            import jax
            import jax.numpy as jnp

            key = jnp.asarray(x if op == "mask" else np.abs(x))
            t_ref = np.asarray(solvers.solve_threshold(jnp.sort(-key, axis=1), k, lam, e, op))
            t, index, fits = jax.jit(lambda a, k=k, lam=lam: solvers.select_threshold(a, k, lam, e, op, margin=1))(key)
            assert index.shape == (len(x), k + 1) and not bool(fits)  # the constant row never fits
        assert_close(np.asarray(t), t_ref, rtol=0, atol=1e-12 * max(1.0, np.abs(t_ref).max()))


@pytest.mark.parametrize("backend", ["torch", "jax"])
@pytest.mark.parametrize("op", OPS_)
@pytest.mark.parametrize("p", [2.0, P43])
def test_selection_solves_on_the_sorted_tail_around_rank_k(backend, op, p):
    """k much larger than m: only ranks [k - m, k + m) are sorted and solved; t equals the full sort's per row."""
    import importlib

    solvers = importlib.import_module(f"backends.{backend}._topk_solvers")
    x = _selection_rows(4000)
    e = 1 if p == 2.0 else 3
    k, lam, margin = 1500, 0.002, 200
    for row in range(len(x)):
        key_np = x[row : row + 1] if op == "mask" else np.abs(x[row : row + 1])
        if backend == "torch":
            import torch

            key = torch.from_numpy(key_np)
            t_ref = solvers.solve_threshold(torch.sort(-key, dim=1).values, k, lam, e, op).numpy()
            t, index = solvers.select_threshold(key, k, lam, e, op, margin=margin)
            if row == 0:  # a random row: solved by the first selection, on its tail
                assert index is not None and index.shape == (1, k + margin)
        else:
            import jax.numpy as jnp

            key = jnp.asarray(key_np)
            t_ref = np.asarray(solvers.solve_threshold(jnp.sort(-key, axis=1), k, lam, e, op))
            top = -jnp.sort(-key, axis=1)[:, : k + margin]
            t = solvers.select_threshold(key, k, lam, e, op, margin=margin)[0]
            if row == 0:
                assert_close(np.asarray(solvers.solve_selected(top, k, lam, e, op)), t_ref, rtol=0, atol=1e-12)
        assert_close(np.asarray(t), t_ref, rtol=0, atol=1e-12 * max(1.0, np.abs(t_ref).max()))


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_selection_path_rejects_non_finite_rows(backend):
    x = _selection_rows()
    for bad, where in [(np.nan, 1000), (-np.inf, 3), (np.inf, 1999)]:
        y = x.copy()
        y[0, where] = bad
        for op in OPS_:
            with pytest.raises(ValueError, match="NaN or"):
                _op(backend, op)(_arr(backend, y), 100, lam=0.01)


@pytest.mark.parametrize("op", OPS_)
@pytest.mark.parametrize("p", [2.0, P43])
def test_torch_and_jax_agree_on_the_selection_path(op, p):
    x = _selection_rows()[[0, 1, 3, 6]]
    g = np.random.default_rng(6).standard_normal(x.shape)
    out = [
        [_np(b, a) for a in backends.get(b).ops.topk_vjp(_arr(b, x), 100, _arr(b, g), op=op, lam=0.05, p=p)]
        for b in ("torch", "jax")
    ]
    assert_close(out[0][0], out[1][0], rtol=1e-12, atol=1e-12)
    assert_close(out[0][1], out[1][1], rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("op", OPS_)
def test_jax_eager_selection_is_taken_and_exact(op):
    """Concrete inputs: ``lax.top_k`` runs as its own computation (XLA's CPU TopK kernel), then the solve."""
    import jax.numpy as jnp

    jax_topk = __import__("backends.jax.topk", fromlist=["_eager_selection"])
    x = _selection_rows()[[0, 3]]  # random and the outlier: about 2 values in the window at lam = 0.01
    g = np.random.default_rng(7).standard_normal(x.shape)
    for p in (2.0, P43):
        selection = jax_topk._eager_selection(jnp.asarray(x), 100, 0.01, 1 if p == 2.0 else 3, op)
        assert selection is not None and selection[1].shape == (2, 100 + 16)
        y, grad = backends.get("jax").ops.topk_vjp(_arr("jax", x), 100, _arr("jax", g), op=op, lam=0.01, p=p)
        y_ref, grad_ref = _sort_solution("jax", x, 100, 0.01, p, op, g)
        assert_close(_np("jax", y), y_ref, rtol=0, atol=1e-12 * np.abs(y_ref).max())
        assert_close(_np("jax", grad), grad_ref, rtol=0, atol=1e-12 * np.abs(grad_ref).max())
        forward = _np("jax", _op("jax", op)(_arr("jax", x), 100, lam=0.01, p=p))
        assert_close(forward, y_ref, rtol=0, atol=1e-12 * np.abs(y_ref).max())
