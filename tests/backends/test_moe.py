"""The sparse-MoE ViT's routing in both backends: expert-choice invariants, gradients, torch vs JAX."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import backends
from backends.jax import moe as jmoe
from backends.moe import MoEConfig, routing_stats
from backends.torch import moe as tmoe
from backends.vit import ViTConfig
from tests.helpers import assert_close

BACKENDS = ("torch", "jax")


def _logits(seed: int = 0, shape=(3, 17, 4)) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape) * 2.0


def _route(backend: str, logits: np.ndarray, moe: MoEConfig) -> tuple[np.ndarray, np.ndarray]:
    be = backends.get(backend)
    combine, mask = be.ops.moe_route(be.asarray(logits, be.device("cpu"), "float64"), moe)
    return be.to_numpy(combine), be.to_numpy(mask)


def _isotonic_mask_oracle(x: np.ndarray, k: int, lam: float) -> np.ndarray:
    """Projection of x / lam onto the capped simplex {0 <= y <= 1, sum y = k} by bisection on the shift."""
    z = x / lam
    lo, hi = z.min() - 1.0, z.max() + 1.0
    for _ in range(200):
        t = (lo + hi) / 2
        if np.clip(z - t, 0, 1).sum() > k:
            lo = t
        else:
            hi = t
    return np.clip(z - (lo + hi) / 2, 0, 1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_hard_router_gives_each_expert_exactly_k_tokens(backend):
    moe = MoEConfig(experts=4, capacity_factor=1.0, router="hard")
    combine, mask = _route(backend, _logits(), moe)
    k = moe.capacity(17)
    assert k == 5
    assert np.all(mask.sum(-1) == k) and set(np.unique(mask)) <= {0.0, 1.0}
    gates = np.exp(_logits()) / np.exp(_logits()).sum(-1, keepdims=True)
    top = np.argsort(-gates.transpose(0, 2, 1), axis=-1)[..., :k]
    expected = np.zeros_like(mask)
    np.put_along_axis(expected, top, 1.0, axis=-1)
    assert_close(mask, expected)
    assert_close(combine, gates * expected.transpose(0, 2, 1))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("solver", ["dykstra", "threshold"])
def test_relaxed_masks_sum_to_k_and_match_the_projection(backend, solver):
    moe = MoEConfig(router="relaxed", solver=solver, lam=0.1, max_iter=200)
    _, mask = _route(backend, _logits(1), moe)
    assert_close(mask.sum(-1), np.full(mask.shape[:-1], 5.0))
    gates = np.exp(_logits(1)) / np.exp(_logits(1)).sum(-1, keepdims=True)
    scores = gates.transpose(0, 2, 1)
    oracle = np.stack([[_isotonic_mask_oracle(r, 5, 0.1) for r in g] for g in scores])
    np.testing.assert_allclose(mask, oracle, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ten_unrolled_dykstra_iterations_keep_the_sum(backend):
    _, mask = _route(backend, _logits(2), MoEConfig(router="relaxed", solver="dykstra", max_iter=10))
    assert_close(mask.sum(-1), np.full(mask.shape[:-1], 5.0))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("solver", ["dykstra", "threshold"])
def test_small_lam_gives_the_hard_routing(backend, solver):
    logits = _logits(3)
    _, hard = _route(backend, logits, MoEConfig(router="hard"))
    _, soft = _route(backend, logits, MoEConfig(router="relaxed", solver=solver, lam=1e-6, max_iter=500))
    np.testing.assert_allclose(soft, hard, atol=1e-6)


def _torch_grads(moe: MoEConfig, logits: np.ndarray, weights: np.ndarray):
    x = torch.tensor(logits, requires_grad=True)
    combine, mask = tmoe.moe_route(x, moe)
    (g_combine,) = torch.autograd.grad((combine * torch.tensor(weights)).sum(), x, retain_graph=True)
    g_mask = None
    if mask.requires_grad:
        g_mask = torch.autograd.grad((mask * torch.tensor(weights).transpose(-1, -2)).sum(), x, allow_unused=True)[0]
    return g_combine.numpy(), (np.zeros_like(logits) if g_mask is None else g_mask.numpy())


def _jax_grads(moe: MoEConfig, logits: np.ndarray, weights: np.ndarray):
    w = jnp.asarray(weights)
    g_combine = jax.grad(lambda x: (jmoe.moe_route(x, moe)[0] * w).sum())(jnp.asarray(logits))
    g_mask = jax.grad(lambda x: (jmoe.moe_route(x, moe)[1] * jnp.swapaxes(w, -1, -2)).sum())(jnp.asarray(logits))
    return np.asarray(g_combine), np.asarray(g_mask)


@pytest.mark.parametrize("router", ["hard", "relaxed"])
def test_gradients_reach_the_gates_always_and_the_selection_only_when_relaxed(router):
    moe = MoEConfig(router=router, solver="dykstra", lam=0.5, max_iter=10)
    logits, weights = _logits(4), np.random.default_rng(5).standard_normal((3, 17, 4))
    t_comb, t_mask = _torch_grads(moe, logits, weights)
    j_comb, j_mask = _jax_grads(moe, logits, weights)
    assert np.abs(t_comb).max() > 1e-3
    if router == "hard":
        assert np.abs(t_mask).max() == 0 and np.abs(j_mask).max() == 0
    else:
        assert np.abs(t_mask).max() > 1e-3
    assert_close(t_comb, j_comb, atol=1e-10, rtol=1e-8)
    assert_close(t_mask, j_mask, atol=1e-10, rtol=1e-8)


def test_unrolled_dykstra_gradient_matches_finite_differences():
    x = torch.tensor(np.random.default_rng(6).uniform(0, 1, (2, 9)), requires_grad=True)
    w = torch.tensor(np.random.default_rng(7).standard_normal((2, 9)))
    f = lambda z: (tmoe.unrolled_dykstra_mask(z, 3, 0.3, 10) * w).sum()
    assert torch.autograd.gradcheck(f, (x,), eps=1e-7, atol=1e-5)


@pytest.mark.parametrize("dispatch", ["sparse", "dense"])
@pytest.mark.parametrize("router", ["hard", "relaxed"])
def test_torch_and_jax_forwards_agree_from_the_same_seed(router, dispatch):
    config = ViTConfig(width=16, depth=2, heads=2, mlp_dim=32)
    moe = MoEConfig(experts=4, router=router, lam=0.05, dispatch=dispatch)
    images = np.random.default_rng(8).standard_normal((3, 1, 8, 8))
    out = {}
    for name in BACKENDS:
        be = backends.get(name)
        params = be.ops.moe_vit_init(config, moe, 0, "cpu", "float64")
        logits, combine = be.ops.moe_vit_apply(params, be.asarray(images, be.device("cpu"), "float64"), config, moe)
        out[name] = be.to_numpy(logits), [be.to_numpy(c) for c in combine]
    assert len(out["torch"][1]) == 1 and out["torch"][1][0].shape == (3, 17, 4)
    assert_close(out["torch"][0], out["jax"][0], atol=1e-10, rtol=1e-8)
    assert_close(out["torch"][1][0], out["jax"][1][0], atol=1e-10, rtol=1e-8)


def test_routing_stats_and_config_errors():
    combine = np.zeros((1, 4, 2))
    combine[0, 0] = [0.5, 0.5]
    combine[0, 1, 0] = 1.0
    stats = routing_stats(combine)
    assert stats["tokens_unrouted_frac"] == 0.5 and stats["router_nnz_frac"] == 3 / 8
    assert stats["experts_per_token_cv"] == pytest.approx(np.std([2, 1, 0, 0]) / 0.75)
    with pytest.raises(ValueError, match="router"):
        MoEConfig(router="soft")
    with pytest.raises(ValueError, match=r"MoEConfig.dispatch='gather': allowed sparse, dense"):
        MoEConfig(dispatch="gather")
    assert MoEConfig(experts=16).dispatch_ladder(65) == (5, 10, 20, 40, 65)
    with pytest.raises(ValueError, match="Dykstra needs p = 2"):
        MoEConfig(router="relaxed", solver="dykstra", p=4 / 3)
    assert MoEConfig(experts=8, capacity_factor=2.0).capacity(17) == 5


# ------------------------------------------------------------------------------ sparse dispatch

_CASES = {
    "hard": dict(router="hard"),
    "dykstra": dict(router="relaxed", solver="dykstra", lam=0.01, max_iter=10),
    "threshold p=4/3": dict(router="relaxed", solver="threshold", p=4 / 3, lam=0.01),
    "pav": dict(router="relaxed", solver="pav", lam=0.01),
}
_SHAPE = ViTConfig(width=16, depth=2, heads=2, mlp_dim=24, patch=1)
"""65 tokens per image; with 16 experts each takes k = 5 (k/n = 0.077, the thesis' 28/400 = 0.07). At
lam = 0.01 the relaxed masks of the init keep 7 to 10 non-zeros in their widest row: exact zeros to skip."""


def _torch_value_and_grads(moe: MoEConfig, images: np.ndarray, weights: np.ndarray):
    params = tmoe.moe_vit_init(_SHAPE, moe, 0, "cpu", "float64")
    leaves = jax.tree_util.tree_leaves(params)
    for leaf in leaves:
        leaf.requires_grad_(True)
    logits, combine = tmoe.moe_vit_apply(params, torch.tensor(images), _SHAPE, moe)
    grads = torch.autograd.grad((logits * torch.tensor(weights)).sum(), leaves)
    return logits.detach().numpy(), [g.numpy() for g in grads], [c.detach().numpy() for c in combine]


def _jax_value_and_grads(moe: MoEConfig, images: np.ndarray, weights: np.ndarray):
    params = jmoe.moe_vit_init(_SHAPE, moe, 0, "cpu", "float64")
    x, w = jnp.asarray(images), jnp.asarray(weights)
    grads = jax.grad(lambda p: (jmoe.moe_vit_apply(p, x, _SHAPE, moe)[0] * w).sum())(params)
    logits, combine = jmoe.moe_vit_apply(params, x, _SHAPE, moe)
    leaves = jax.tree_util.tree_leaves(grads)
    return np.asarray(logits), [np.asarray(g) for g in leaves], [np.asarray(c) for c in combine]


_VALUE_AND_GRADS = {"torch": _torch_value_and_grads, "jax": _jax_value_and_grads}


def _images_and_weights(seed: int = 11):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((3, 1, 8, 8)), rng.standard_normal((3, 10))


@pytest.mark.parametrize("case", list(_CASES))
@pytest.mark.parametrize("backend", BACKENDS)
def test_sparse_dispatch_gives_the_dense_outputs_and_gradients(backend, case):
    images, weights = _images_and_weights()
    moe = MoEConfig(experts=16, **_CASES[case])
    sparse = _VALUE_AND_GRADS[backend](moe, images, weights)
    dense = _VALUE_AND_GRADS[backend](dataclasses.replace(moe, dispatch="dense"), images, weights)
    widest = max(int((c != 0).sum(1).max()) for c in sparse[2])
    assert widest < 65, "the mask has no exact zeros: sparse and dense would do the same work"
    assert_close(sparse[0], dense[0])
    assert len(sparse[1]) == len(dense[1]) > 10
    for got, want in zip(sparse[1], dense[1]):
        assert_close(got, want)


@pytest.mark.parametrize("case", list(_CASES))
def test_torch_and_jax_sparse_dispatch_agree_with_gradients(case):
    images, weights = _images_and_weights(12)
    moe = MoEConfig(experts=16, **_CASES[case])
    t, j = _torch_value_and_grads(moe, images, weights), _jax_value_and_grads(moe, images, weights)
    assert_close(t[0], j[0], atol=1e-10, rtol=1e-8)
    for got, want in zip(t[1], j[1]):
        assert_close(got, want, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("dispatch", ["sparse", "dense"])
@pytest.mark.parametrize("case", ["hard", "dykstra", "threshold p=4/3"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_experts_process_only_the_rows_they_select(backend, case, dispatch, monkeypatch):
    """Spies on ``expert_mlp`` (the real one runs) and counts the rows each call hands the experts."""
    module = {"torch": tmoe, "jax": jmoe}[backend]
    seen: list[tuple[int, ...]] = []

    def counting(params, xs):
        seen.append(tuple(xs.shape))
        return real(params, xs)

    real = module.expert_mlp
    monkeypatch.setattr(module, "expert_mlp", counting)
    moe = MoEConfig(experts=16, dispatch=dispatch, **_CASES[case])
    be = backends.get(backend)
    params = be.ops.moe_vit_init(_SHAPE, moe, 0, "cpu", "float64")
    images = be.asarray(_images_and_weights()[0], be.device("cpu"), "float64")
    with jax.disable_jit():  # JAX runs op by op: lax.switch runs only the branch it picks
        _, combine = be.ops.moe_vit_apply(params, images, _SHAPE, moe)
    G, n, E = be.to_numpy(combine[0]).shape
    widest = int((be.to_numpy(combine[0]) != 0).sum(1).max())
    if dispatch == "dense":
        per_expert = G * n
    elif case == "hard":
        per_expert = G * 5
    elif backend == "torch":
        per_expert = G * widest
    else:
        per_expert = G * min(c for c in moe.dispatch_ladder(n) if c >= widest)
    assert seen == [(E, per_expert, _SHAPE.width)]
    if dispatch == "sparse":
        assert per_expert <= G * n // 2 if case == "hard" or backend == "torch" else per_expert < G * n


@pytest.mark.parametrize("dispatch", ["sparse", "dense"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_non_finite_input_raises_the_routers_one_line_error_in_either_dispatch(backend, dispatch):
    config = ViTConfig(width=16, depth=2, heads=2, mlp_dim=24)
    moe = MoEConfig(router="relaxed", solver="threshold", lam=0.01, dispatch=dispatch)
    be = backends.get(backend)
    params = be.ops.moe_vit_init(config, moe, 0, "cpu", "float64")
    images = _images_and_weights()[0]
    images[1, 0, 2, 3] = np.nan
    with jax.disable_jit(), pytest.raises(ValueError, match=r"^x contains NaN or \+-inf; the relaxed top-k is defined"):
        be.ops.moe_vit_apply(params, be.asarray(images, be.device("cpu"), "float64"), config, moe)
