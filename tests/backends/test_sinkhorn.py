"""Log-domain Sinkhorn and Sinkhorn attention (thesis chapter 5) in both backends, against NumPy oracles."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import backends
from backends.signatures import OPS
from tests.helpers import assert_close

BACKENDS = ["torch", "jax"]
MINE = ("sinkhorn", "attention", "fused_attention")


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny tensors: one thread is as fast, and two on a shared two-core machine wait for each other."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def arr(name: str, a: np.ndarray, dtype: str | None = None):
    b = backends.get(name)
    return b.asarray(np.asarray(a), b.device("cpu"), dtype)


def num(name: str, x) -> np.ndarray:
    return backends.get(name).to_numpy(x)


def grad(name: str, fn, x: np.ndarray, cotangent: np.ndarray) -> np.ndarray:
    """d/dx sum(fn(x) * cotangent), by the backend's autodiff."""
    if name == "torch":
        import torch

        xt = torch.tensor(x, requires_grad=True)
        (fn(xt) * torch.tensor(cotangent)).sum().backward()
        return xt.grad.numpy()
    import jax
    import jax.numpy as jnp

    return np.asarray(jax.jit(jax.grad(lambda z: (fn(z) * jnp.asarray(cotangent)).sum()))(jnp.asarray(x)))


def oracle(cost: np.ndarray, n_iter: int) -> np.ndarray:
    """Sinkhorn as eq. 5.3 writes it: exp, then alternately divide by row and column sums (no logs)."""
    n, m = cost.shape[-2:]
    k = np.exp(cost - cost.max(axis=(-2, -1), keepdims=True))
    for step in range(n_iter):
        k = k / k.sum(-1, keepdims=True) if step % 2 == 0 else k / k.sum(-2, keepdims=True) * (n / m)
    return k


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.fixture
def scores() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(2, 3, 7, 7))


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_one_iteration_is_the_softmax(name, dtype, scores):
    out = backends.get(name).ops.sinkhorn(arr(name, scores, dtype), 1)
    assert_close(num(name, out), softmax(scores.astype(dtype)), dtype)


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("n_iter", [2, 3, 4, 7])
def test_iterations_match_the_plain_alternating_normalisation(name, n_iter, scores):
    out = backends.get(name).ops.sinkhorn(arr(name, scores), n_iter)
    assert_close(num(name, out), oracle(scores, n_iter))


@pytest.mark.parametrize("name", BACKENDS)
def test_fifty_iterations_are_doubly_stochastic_in_float64(name, scores):
    out = num(name, backends.get(name).ops.sinkhorn(arr(name, scores), 50))
    assert_close(out.sum(-1), np.ones((2, 3, 7)), atol=1e-8)  # N(0, 1) scores: about 3e-9 left after 50
    assert_close(out.sum(-2), np.ones((2, 3, 7)), atol=1e-8)  # sums are 1, not 1/n


@pytest.mark.parametrize("name", BACKENDS)
def test_odd_iterations_end_on_rows_and_even_on_columns(name, scores):
    ops = backends.get(name).ops
    odd, even = num(name, ops.sinkhorn(arr(name, scores), 5)), num(name, ops.sinkhorn(arr(name, scores), 4))
    assert_close(odd.sum(-1), 1.0)
    assert_close(even.sum(-2), 1.0)
    assert np.abs(odd.sum(-2) - 1).max() > 1e-6 and np.abs(even.sum(-1) - 1).max() > 1e-6  # not yet converged


@pytest.mark.parametrize("name", BACKENDS)
def test_rectangular_columns_carry_n_over_m(name):
    cost = np.random.default_rng(1).normal(size=(4, 6))
    out = num(name, backends.get(name).ops.sinkhorn(arr(name, cost), 101))
    assert_close(out.sum(-1), np.ones(4))
    assert_close(out.sum(-2), np.full(6, 4 / 6), atol=1e-8)


@pytest.mark.parametrize("name", BACKENDS)
def test_adding_row_and_column_terms_changes_nothing_at_convergence(name, scores):
    """Prop. 5.1: Sinkhorn(C + f 1^T + 1 g^T) = Sinkhorn(C)."""
    rng = np.random.default_rng(2)
    shifted = scores + rng.normal(size=(2, 3, 7, 1)) * 3 + rng.normal(size=(2, 3, 1, 7)) * 3
    ops = backends.get(name).ops
    assert_close(
        num(name, ops.sinkhorn(arr(name, shifted), 121)), num(name, ops.sinkhorn(arr(name, scores), 121)), atol=1e-9
    )


def _mask() -> np.ndarray:
    mask = np.ones((2, 1, 7), bool)
    mask[0, 0, 5:] = False
    mask[1, 0, [0, 3]] = False
    return mask


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("n_iter", [1, 2, 5, 60])
def test_masked_tokens_get_zero_weight_and_leave_the_rest_as_if_cropped(name, n_iter, scores):
    mask = _mask()
    out = num(name, backends.get(name).ops.sinkhorn(arr(name, scores), n_iter, arr(name, mask)))
    for b in range(2):
        keep = np.flatnonzero(mask[b, 0])
        drop = np.flatnonzero(~mask[b, 0])
        assert (out[b][:, drop, :] == 0).all() and (out[b][:, :, drop] == 0).all()
        assert_close(out[b][:, keep][:, :, keep], oracle(scores[b][:, keep][:, :, keep], n_iter))


@pytest.mark.parametrize("name", BACKENDS)
def test_masked_scores_get_zero_and_finite_gradients(name, scores):
    mask = _mask()
    fn = lambda c: backends.get(name).ops.sinkhorn(c, 6, arr(name, mask))
    g = grad(name, fn, scores, np.random.default_rng(3).normal(size=scores.shape))
    assert np.isfinite(g).all()
    pair = mask[..., :, None] & mask[..., None, :]
    assert (g[~np.broadcast_to(pair, g.shape)] == 0).all()


@pytest.mark.parametrize("name", BACKENDS)
def test_unrolled_gradient_matches_finite_differences(name):
    """Gradients flow through every iteration (central differences as the oracle)."""
    rng = np.random.default_rng(4)
    cost, cot = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    g = grad(name, lambda c: backends.get(name).ops.sinkhorn(c, 4), cost, cot)
    fd = np.zeros_like(cost)
    for idx in np.ndindex(cost.shape):
        e = np.zeros_like(cost)
        e[idx] = 1e-6
        fd[idx] = ((oracle(cost + e, 4) - oracle(cost - e, 4)) * cot).sum() / 2e-6
    assert_close(g, fd, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("masked", [False, True])
def test_implicit_gradient_equals_unrolled_at_convergence(name, masked, scores):
    mask = arr(name, _mask()) if masked else None
    ops = backends.get(name).ops
    cot = np.random.default_rng(5).normal(size=scores.shape)
    unrolled = grad(name, lambda c: ops.sinkhorn(c, 120, mask), scores, cot)
    implicit = grad(name, lambda c: ops.sinkhorn(c, 120, mask, implicit=True), scores, cot)
    assert_close(implicit, unrolled, atol=1e-9)
    assert_close(
        num(name, ops.sinkhorn(arr(name, scores), 120, mask, implicit=True)),
        num(name, ops.sinkhorn(arr(name, scores), 120, mask)),
    )


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("n_iter", [1, 3, 8])
def test_torch_equals_jax_forward_and_gradient(masked, n_iter, scores):
    cot = np.random.default_rng(6).normal(size=scores.shape)
    out, grads = {}, {}
    for name in BACKENDS:
        ops = backends.get(name).ops
        mask = arr(name, _mask()) if masked else None
        out[name] = num(name, ops.sinkhorn(arr(name, scores, "float32"), n_iter, mask))
        grads[name] = grad(name, lambda c, ops=ops, mask=mask: ops.sinkhorn(c, n_iter, mask), scores, cot)
    assert_close(out["torch"], out["jax"], "float32")
    assert_close(grads["torch"], grads["jax"])


@pytest.mark.parametrize("name", BACKENDS)
def test_softmax_attention_equals_fused_and_one_sinkhorn_iteration(name):
    rng = np.random.default_rng(7)
    q, k, v = (arr(name, rng.normal(size=(2, 3, 6, 4))) for _ in range(3))
    ops = backends.get(name).ops
    out, weights = ops.attention(q, k, v, "softmax")
    one, _ = ops.attention(q, k, v, "sinkhorn", sinkhorn_iters=1)
    assert_close(num(name, out), num(name, ops.fused_attention(q, k, v)), "float32")  # JAX's runs float32 inside
    assert_close(num(name, one), num(name, out))
    assert num(name, weights).shape == (2, 3, 6, 6)


def test_attention_torch_equals_jax():
    rng = np.random.default_rng(8)
    qkv = [rng.normal(size=(2, 2, 5, 4)) for _ in range(3)]
    res = {
        name: backends.get(name).ops.attention(*(arr(name, a, "float32") for a in qkv), "sinkhorn", 9)
        for name in BACKENDS
    }
    for i in range(2):
        assert_close(num("torch", res["torch"][i]), num("jax", res["jax"][i]), "float32")


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(n_iter=0), "n_iter=0"),
        (dict(mask=np.ones((2, 3, 7), np.float32)), "mask: expected a bool"),
        (dict(mask=np.ones((7,), bool)), r"mask: expected shape"),
    ],
)
def test_bad_arguments_name_the_field(name, bad, match, scores):
    kwargs = {"n_iter": 3, **bad}
    if "mask" in kwargs:
        kwargs["mask"] = arr(name, kwargs["mask"])
    with pytest.raises(ValueError, match=match):
        backends.get(name).ops.sinkhorn(arr(name, scores), **kwargs)
    with pytest.raises(ValueError, match="normalization='sparsemax'"):
        backends.get(name).ops.attention(*(arr(name, scores[..., :2]) for _ in range(3)), "sparsemax")


def test_mask_needs_square_scores():
    for name in BACKENDS:
        with pytest.raises(ValueError, match="square"):
            backends.get(name).ops.sinkhorn(arr(name, np.zeros((3, 4))), 3, arr(name, np.ones(3, bool)))


@pytest.mark.parametrize("op", MINE)
def test_signature_matches_its_protocol(op):
    protocol = [p.name for p in inspect.signature(OPS[op].__call__).parameters.values() if p.name != "self"]
    for name in BACKENDS:
        assert [p.name for p in inspect.signature(getattr(backends.get(name).ops, op)).parameters.values()] == protocol


@pytest.mark.parametrize("name", BACKENDS)
def test_implicit_backward_keeps_one_plan_instead_of_every_iteration(name, scores):
    b = backends.get(name)
    x = arr(name, scores)
    if name == "torch":
        x.requires_grad_(True)
    plan_bytes = scores.size * 8
    implicit = b.memory.saved_bytes(lambda c: b.ops.sinkhorn(c, 21, implicit=True), x)
    unrolled = b.memory.saved_bytes(lambda c: b.ops.sinkhorn(c, 21), x)
    assert implicit <= plan_bytes * 1.1 and unrolled >= 10 * plan_bytes, (implicit, unrolled)
