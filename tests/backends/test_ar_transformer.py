"""Autoregressive in-context learning (chapter 6): data, the Transformer and the GD baseline, against
NumPy oracles and across backends."""

from __future__ import annotations

import math

import numpy as np
import pytest

import backends
from backends.ar_transformer import ARConfig, ar_sequences, augment, init_params
from tests.helpers import assert_close

BACKENDS = ["torch", "jax"]


def arr(name: str, a: np.ndarray, dtype: str = "float64"):
    b = backends.get(name)
    return b.asarray(np.asarray(a), b.device("cpu"), dtype)


def num(name: str, x) -> np.ndarray:
    return backends.get(name).to_numpy(x)


def np_layer_norm(x: np.ndarray, p: dict) -> np.ndarray:
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-5) * p["scale"] + p["bias"]


def oracle_apply(params: dict, tokens: np.ndarray, config: ARConfig) -> np.ndarray:
    """The layers written token by token: e_t += LN(W_O sum_{t' <= t} a_{t,t'} W_V e_t') (+ LN(MLP(e_t)))."""
    x = tokens.copy()
    length, width = x.shape[1:]
    for block in params["blocks"]:
        q, k, v = x @ block["wq"], x @ block["wk"], x @ block["wv"]
        out = np.zeros_like(x)
        for t in range(length):
            scores = np.einsum("nd,nsd->ns", q[:, t], k[:, : t + 1]) / math.sqrt(width)
            if config.softmax:
                scores = np.exp(scores - scores.max(-1, keepdims=True))
                scores /= scores.sum(-1, keepdims=True)
            out[:, t] = np.einsum("ns,nsd->nd", scores, v[:, : t + 1])
        x = x + np_layer_norm(out @ block["wo"], block["ln"])
        if config.mlp_dim is not None:
            m = block["mlp"]
            x = x + np_layer_norm(np.maximum(x @ m["w1"] + m["b1"], 0.0) @ m["w2"] + m["b2"], block["ln_mlp"])
    return x[..., : config.dim]


def oracle_gd(states: np.ndarray, steps: int, eta: float) -> np.ndarray:
    """Per sequence and position: GD on 1/2 sum_{j<t} ||s_{j+1} - W s_j||^2 from W = 0, by explicit gradients."""
    n, length, d = states.shape[0], states.shape[1] - 1, states.shape[2]
    out = np.zeros((n, length, d))
    for i in range(n):
        for t in range(length):
            w = np.zeros((d, d))
            for _ in range(steps):
                grad = sum(-np.outer(states[i, j + 1] - w @ states[i, j], states[i, j]) for j in range(t))
                w = w - eta * grad
            out[i, t] = w @ states[i, t]
    return out


CONFIGS = [ARConfig(dim=2, depth=2), ARConfig(dim=2, depth=2, softmax=True, mlp_dim=5)]


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("config", CONFIGS, ids=["linear", "softmax_mlp"])
def test_apply_matches_the_token_by_token_oracle(name, config):
    tokens, _ = augment(ar_sequences(3, config.dim, 6, seed=0))
    ops = backends.get(name).ops
    params = ops.ar_transformer_init(config, 1, "cpu", "float64")
    assert_close(
        num(name, ops.ar_transformer_apply(params, arr(name, tokens), config)),
        oracle_apply(init_params(config, 1, "float64"), tokens, config),
    )


@pytest.mark.parametrize("config", CONFIGS, ids=["linear", "softmax_mlp"])
def test_training_agrees_between_torch_and_jax(config):
    tokens, targets = augment(ar_sequences(16, config.dim, 6, seed=0))
    order = np.random.default_rng(0).permutation(16)
    runs = {}
    for name in BACKENDS:
        ops = backends.get(name).ops
        trainer = ops.ar_transformer_trainer(config, ops.ar_transformer_init(config, 2, "cpu", "float64"), 1e-2)
        x, y = arr(name, tokens), arr(name, targets)
        trainer.compile(x, y, 4)
        losses = [trainer.fit_epoch(x, y, order, 4) for _ in range(3)]
        runs[name] = (losses, trainer.predict(x, 8))
    assert_close(runs["torch"][0], runs["jax"][0], rtol=1e-8, atol=1e-10)
    assert_close(runs["torch"][1], runs["jax"][1], rtol=1e-7, atol=1e-9)
    assert runs["torch"][0][-1] < runs["torch"][0][0]


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("steps", [0, 1, 3])
def test_gd_baseline_matches_explicit_gradient_steps(name, steps):
    states = ar_sequences(3, 3, 7, seed=1)
    pred = num(name, backends.get(name).ops.ar_gd_predict(arr(name, states), steps, 0.05))
    assert pred.shape == (3, 7, 3)
    assert_close(pred, oracle_gd(states, steps, 0.05))


def test_one_gd_step_is_the_correlation_times_the_step_size():
    """Proposition 6.4: from W = 0, one step gives eta sum_{j<t} s_{j+1} s_j^T."""
    states = ar_sequences(2, 3, 5, seed=2)
    pred = num("torch", backends.get("torch").ops.ar_gd_predict(arr("torch", states), 1, 0.3))
    t = 4
    corr = sum(np.einsum("ni,nj->nij", states[:, j + 1], states[:, j]) for j in range(t))
    assert_close(pred[:, t], 0.3 * np.einsum("nij,nj->ni", corr, states[:, t]))


def test_sequences_are_orthogonal_recursions_from_ones_and_tokens_are_augmented():
    states = ar_sequences(4, 5, 9, seed=3)
    assert states.shape == (4, 10, 5) and np.all(states[:, 0] == 1.0)
    assert_close(np.linalg.norm(states, axis=-1), math.sqrt(5.0))  # orthogonal W keeps the norm
    w = np.linalg.lstsq(states[0, :-1], states[0, 1:], rcond=None)[0].T
    assert_close(w @ w.T, np.eye(5), atol=1e-8)
    tokens, targets = augment(states)
    assert tokens.shape == (4, 9, 15)
    assert np.all(tokens[..., :5] == 0) and np.all(tokens[:, :, 5:10] == states[:, :-1])
    assert np.all(tokens[:, 0, 10:] == 0) and np.all(tokens[:, 1:, 10:] == states[:, :-2])
    assert np.all(targets == states[:, 1:])
    assert not np.allclose(ar_sequences(4, 5, 9, seed=3, stream=1), states)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="depth=0 must be an integer >= 1"):
        ARConfig(dim=2, depth=0)
    with pytest.raises(ValueError, match="mlp_dim=-1 must be None or an integer >= 1"):
        ARConfig(dim=2, depth=1, mlp_dim=-1)
