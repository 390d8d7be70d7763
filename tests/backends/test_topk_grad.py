"""Closed-form gradients of the relaxed top-k (Prop. 7.8 with lam): finite differences, torch vs JAX, memory."""

from __future__ import annotations

import numpy as np
import pytest

import backends
from tests.helpers import assert_close

P43 = 4.0 / 3.0
CASES = [("threshold", 2.0), ("pav", 2.0), ("dykstra", 2.0), ("threshold", P43), ("pav", P43)]


def _arr(backend: str, a: np.ndarray, dtype: str = "float64"):
    b = backends.get(backend)
    return b.asarray(np.asarray(a), b.device("cpu"), dtype)


def _x() -> np.ndarray:
    """Rows with ties among the largest and among the smallest values, exact zeros, and a pooled block."""
    x = np.random.default_rng(7).standard_normal((3, 16))
    x[:, 0] = x[:, 1] = 3.0  # a tie among the saturated elements
    x[:, 14] = x[:, 15] = 0.0  # exact zeros (a tie among the zero outputs)
    x[0, 5] = -3.5  # large in magnitude, small in value
    return x


def _kwargs(solver: str, p: float) -> dict:
    return dict(lam=0.4, p=p, solver=solver) | (dict(max_iter=20_000, tol=0.0) if solver == "dykstra" else {})


JAX_SLOW = pytest.param("jax", marks=pytest.mark.slow)  # torch vs JAX gradients agree (below) in the default run


@pytest.mark.parametrize("backend", ["torch", JAX_SLOW])
@pytest.mark.parametrize("op", ["mask", "mag"])
@pytest.mark.parametrize("solver,p", CASES)
def test_gradient_matches_finite_differences(backend, op, solver, p):
    ops, x, kw = backends.get(backend).ops, _x(), _kwargs(solver, p)
    f = ops.topk_mask if op == "mask" else ops.topk_mag
    rng = np.random.default_rng(8)
    g = rng.standard_normal(x.shape)
    y, grad = ops.topk_vjp(_arr(backend, x), 4, _arr(backend, g), op=op, **kw)
    y_np, grad = backends.get(backend).to_numpy(y), backends.get(backend).to_numpy(grad)
    assert np.isfinite(grad).all() and (y_np == 0).any()
    h = 1e-6
    for _ in range(3):
        d = rng.standard_normal(x.shape)
        plus = backends.get(backend).to_numpy(f(_arr(backend, x + h * d), 4, **kw))
        minus = backends.get(backend).to_numpy(f(_arr(backend, x - h * d), 4, **kw))
        fd = np.sum((plus - minus) * g) / (2 * h)
        assert abs(fd - np.sum(grad * d)) <= 1e-6 * (1 + abs(fd)), (fd, np.sum(grad * d))


@pytest.mark.parametrize("op", ["mask", "mag"])
@pytest.mark.parametrize("p", [2.0, P43])
def test_full_jacobian_matches_finite_differences_per_coordinate(op, p):
    ops, x = backends.get("torch").ops, _x()[:1]
    f = ops.topk_mask if op == "mask" else ops.topk_mag
    g = np.random.default_rng(9).standard_normal(x.shape)
    _, grad = ops.topk_vjp(_arr("torch", x), 4, _arr("torch", g), op=op, lam=0.4, p=p)
    fd = np.zeros_like(x)
    for i in range(x.shape[1]):
        e = np.zeros_like(x)
        e[0, i] = 1e-6
        fd[0, i] = (
            np.sum((f(_arr("torch", x + e), 4, lam=0.4, p=p) - f(_arr("torch", x - e), 4, lam=0.4, p=p)).numpy() * g)
            / 2e-6
        )
    assert_close(grad.numpy(), fd, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("op", ["mask", "mag"])
@pytest.mark.parametrize("solver,p", CASES)
def test_torch_and_jax_gradients_agree(op, solver, p):
    x, g = _x(), np.random.default_rng(10).standard_normal((3, 16))
    out = [
        backends.get(b).to_numpy(
            backends.get(b).ops.topk_vjp(_arr(b, x), 4, _arr(b, g), op=op, **_kwargs(solver, p))[1]
        )
        for b in ("torch", "jax")
    ]
    assert_close(out[0], out[1])


@pytest.mark.parametrize("backend", ["torch", "jax"])
@pytest.mark.parametrize("op", ["mask", "mag"])
@pytest.mark.parametrize("p", [2.0, P43])
def test_selection_path_gradient_matches_finite_differences(backend, op, p):
    """n = 400, k = 20: the threshold is found on the top k + m values (not a sort); Prop. 7.8 still holds."""
    import importlib

    solvers = importlib.import_module(f"backends.{backend}._topk_solvers")
    assert 20 + solvers.select_margin(20, 400) < 0.5 * 400  # the default takes the selection path here
    ops, to = backends.get(backend).ops, backends.get(backend).to_numpy
    f = ops.topk_mask if op == "mask" else ops.topk_mag
    rng = np.random.default_rng(13)
    x = rng.standard_normal((2, 400))
    x[1, :5] = 4.0  # a tie among the saturated elements
    g = rng.standard_normal(x.shape)
    y, grad = ops.topk_vjp(_arr(backend, x), 20, _arr(backend, g), op=op, lam=0.05, p=p)
    assert (to(y) == 0).mean() > 0.8 and (to(grad) != 0).any()
    h = 1e-6
    for _ in range(3):
        d = rng.standard_normal(x.shape)
        fd = np.sum(
            (to(f(_arr(backend, x + h * d), 20, lam=0.05, p=p)) - to(f(_arr(backend, x - h * d), 20, lam=0.05, p=p)))
            * g
        ) / (2 * h)
        assert abs(fd - np.sum(to(grad) * d)) <= 1e-6 * (1 + abs(fd)), (fd, np.sum(to(grad) * d))


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_unconverged_dykstra_gradient_is_a_block_jacobian(backend):
    """Ten iterations: blocks not yet exact, yet the mask's Jacobian keeps sum y = k (J^T 1 = 0) and is symmetric."""
    ops, x = backends.get(backend).ops, _x()
    to = backends.get(backend).to_numpy
    kw = dict(op="mask", lam=0.4, solver="dykstra", max_iter=10)
    _, ones = ops.topk_vjp(_arr(backend, x), 4, _arr(backend, np.ones_like(x)), **kw)
    assert np.max(np.abs(to(ones))) < 1e-12
    a, b = np.random.default_rng(11).standard_normal((2,) + x.shape)
    _, ja = ops.topk_vjp(_arr(backend, x), 4, _arr(backend, a), **kw)
    _, jb = ops.topk_vjp(_arr(backend, x), 4, _arr(backend, b), **kw)
    assert abs(np.sum(to(ja) * b) - np.sum(to(jb) * a)) < 1e-10


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_hard_and_k0_gradients(backend):
    ops, x = backends.get(backend).ops, _x()
    to = backends.get(backend).to_numpy
    g = np.random.default_rng(12).standard_normal(x.shape)
    _, gm = ops.topk_vjp(_arr(backend, x), 4, _arr(backend, g), op="mask", solver="hard")
    _, gg = ops.topk_vjp(_arr(backend, x), 4, _arr(backend, g), op="mag", solver="hard")
    _, g0 = ops.topk_vjp(_arr(backend, x), 0, _arr(backend, g), op="mask")
    assert np.all(to(gm) == 0) and np.all(to(g0) == 0)
    assert_close(to(gg), g * to(ops.hard_topk_mask(_arr(backend, np.abs(x)), 4)))


@pytest.mark.parametrize("solver,per_element", [("threshold", 2), ("pav", 24), ("dykstra", 24)])
def test_torch_backward_keeps_o_n_bytes(solver, per_element):
    """Saved for backward: the threshold keeps t and the indices of the non-zero outputs (about k + the
    pooled block, int64: about one byte per element at k = n/10); PAV/Dykstra O(n) (never n x n)."""
    import torch

    backend = backends.get("torch")
    sizes = {}
    for n in (1000, 4000):
        x = torch.randn(2, n, dtype=torch.float64, requires_grad=True)
        sizes[n] = backend.memory.saved_bytes(
            lambda a, n=n: backend.ops.topk_mask(a, n // 10, lam=0.1, solver=solver), x
        )
        assert sizes[n] <= per_element * 2 * n + 64
    assert sizes[4000] <= 4.5 * max(sizes[1000], 1)


@pytest.mark.slow
def test_jax_residuals_are_linear_in_n():
    backend = backends.get("jax")
    sizes = [
        backend.memory.saved_bytes(
            lambda a, n=n: backend.ops.topk_mask(a, n // 10, lam=0.1), _arr("jax", np.ones((2, n)))
        )
        for n in (1000, 4000)
    ]
    assert sizes[1] <= 4.5 * sizes[0] and sizes[1] <= 16 * 2 * 4000 + 64
