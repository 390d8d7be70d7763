"""The pruned MLP of section 7.6: pruning keeps k entries by magnitude, NumPy oracle, torch vs JAX."""

from __future__ import annotations

import math

import numpy as np
import pytest

import backends
from backends.pruned_mlp import PrunedMLPConfig, init_params
from tests.helpers import assert_close

BACKENDS = ["torch", "jax"]
SIZES = (12, 8, 6, 3)


def tree(name: str, params: dict, dtype: str = "float64") -> dict:
    b = backends.get(name)
    return {k: [b.asarray(a, b.device("cpu"), dtype) for a in v] for k, v in params.items()}


def arr(name: str, a: np.ndarray, dtype: str | None = "float64"):
    b = backends.get(name)
    return b.asarray(a, b.device("cpu"), dtype)


def oracle_hard(w: np.ndarray, k: int) -> np.ndarray:
    """Keep the k entries of largest magnitude of the whole matrix (no ties in Gaussian draws)."""
    flat = w.ravel()
    out = np.zeros_like(flat)
    keep = np.argsort(-np.abs(flat))[:k]
    out[keep] = flat[keep]
    return out.reshape(w.shape)


def oracle_apply(weights: list[np.ndarray], biases: list[np.ndarray], x: np.ndarray) -> np.ndarray:
    h = x.reshape(len(x), -1)
    for i, (w, b) in enumerate(zip(weights, biases)):
        h = h @ w + b
        h = np.maximum(h, 0.0) if i < len(weights) - 1 else h
    return h


@pytest.mark.parametrize("name", BACKENDS)
def test_hard_pruning_keeps_the_largest_entries_and_apply_matches_numpy(name):
    config = PrunedMLPConfig(sizes=SIZES, operator="hard", keep=0.1)
    raw = init_params(config, 0, "float64")
    ops = backends.get(name).ops
    params = tree(name, raw)
    weights = [backends.get(name).to_numpy(w) for w in ops.pruned_mlp_weights(params, config)]
    expected = [oracle_hard(w, config.kept(i)) for i, w in enumerate(raw["w"])]
    for got, want, i in zip(weights, expected, range(3)):
        assert_close(got, want)
        assert np.count_nonzero(got) == config.kept(i) == math.ceil(0.1 * got.size)
    x = np.random.default_rng(1).standard_normal((5, 12))
    assert_close(
        backends.get(name).to_numpy(ops.pruned_mlp_apply(params, arr(name, x), config)),
        oracle_apply(expected, raw["b"], x),
    )


@pytest.mark.parametrize("name", BACKENDS)
def test_relaxed_pruning_with_p2_shrinks_the_kept_entries_by_one_plus_lambda(name):
    """p = 2, k-support geometry: the top entries far from the boundary come out as |x| / (1 + lam) (7.4)."""
    config = PrunedMLPConfig(sizes=SIZES, operator="relaxed", keep=0.25, lam=1e-2, p=2.0)
    raw = init_params(config, 0, "float64")
    got = backends.get(name).to_numpy(backends.get(name).ops.pruned_mlp_weights(tree(name, raw), config)[0])
    hard = oracle_hard(raw["w"][0], config.kept(0))
    top = np.argsort(-np.abs(raw["w"][0].ravel()))[: config.kept(0) - 3]  # clear of the pooled block
    assert_close(got.ravel()[top], hard.ravel()[top] / 1.01, rtol=1e-9)
    assert np.count_nonzero(got) <= config.kept(0) + 3  # at most the pooled block's few extra entries


@pytest.mark.parametrize("operator", ["dense", "hard", "relaxed"])
def test_apply_and_gradients_agree_between_torch_and_jax(operator):
    import jax
    import torch

    config = PrunedMLPConfig(sizes=SIZES, operator=operator, keep=0.2, lam=1e-3, p=4 / 3)
    raw = init_params(config, 3, "float64")
    x = np.random.default_rng(2).standard_normal((4, 12))
    tparams = {k: [torch.tensor(a, requires_grad=True) for a in v] for k, v in raw.items()}
    ops_t, ops_j = backends.get("torch").ops, backends.get("jax").ops
    out_t = ops_t.pruned_mlp_apply(tparams, torch.tensor(x), config)
    out_t.square().sum().backward()
    jparams = tree("jax", raw)
    out_j, grads = jax.value_and_grad(lambda p: (ops_j.pruned_mlp_apply(p, arr("jax", x), config) ** 2).sum())(jparams)
    assert_close(out_t.square().sum().item(), float(out_j))
    for i in range(3):
        assert_close(tparams["w"][i].grad.numpy(), np.asarray(grads["w"][i]), atol=1e-9)


@pytest.mark.parametrize("operator", ["hard", pytest.param("relaxed", marks=pytest.mark.slow)])
def test_sgd_training_agrees_between_torch_and_jax(operator):
    config = PrunedMLPConfig(sizes=SIZES, operator=operator, keep=0.2, lam=1e-3, p=2.0)
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((32, 12)), rng.integers(0, 3, 32)
    order = rng.permutation(32)
    runs = {}
    for name in BACKENDS:
        ops = backends.get(name).ops
        trainer = ops.pruned_mlp_trainer(config, ops.pruned_mlp_init(config, 5, "cpu", "float64"), 0.1)
        xb, yb = arr(name, x), arr(name, y, None)
        trainer.compile(xb, yb, 8)
        runs[name] = ([trainer.fit_epoch(xb, yb, order, 8) for _ in range(2)], trainer.weights(), trainer.predict(xb))
    assert_close(runs["torch"][0], runs["jax"][0], rtol=1e-9)
    for a, b in zip(runs["torch"][1], runs["jax"][1]):
        assert_close(a, b, atol=1e-12)
    assert np.array_equal(runs["torch"][2], runs["jax"][2])


def test_a_compiled_pass_of_steps_spanning_epochs_agrees_between_torch_and_jax():
    """``compile(..., steps)`` and a stream of 6 minibatches over 2.5 epochs of 20 examples (hard pruning)."""
    config = PrunedMLPConfig(sizes=SIZES, operator="hard", keep=0.2)
    rng = np.random.default_rng(7)
    x, y = rng.standard_normal((20, 12)), rng.integers(0, 3, 20)
    stream = np.concatenate([rng.permutation(20)[:16] for _ in range(3)])  # 2 batches of 8 an epoch, 6 in all
    runs = {}
    for name in BACKENDS:
        ops = backends.get(name).ops
        trainer = ops.pruned_mlp_trainer(config, ops.pruned_mlp_init(config, 5, "cpu", "float64"), 0.1)
        xb, yb = arr(name, x), arr(name, y, None)
        trainer.compile(xb, yb, 8, 6)
        runs[name] = (trainer.fit_epoch(xb, yb, stream, 8), trainer.weights())
    assert_close(runs["torch"][0], runs["jax"][0], rtol=1e-9)
    for a, b in zip(runs["torch"][1], runs["jax"][1]):
        assert_close(a, b, atol=1e-12)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="operator='soft' is unknown; allowed: dense, hard, relaxed"):
        PrunedMLPConfig(operator="soft")
    with pytest.raises(ValueError, match="keep=0 must be in"):
        PrunedMLPConfig(keep=0)
