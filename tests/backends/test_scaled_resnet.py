"""The scaled residual network of eq. 3.3 and its gradient descent: NumPy oracles, torch autograd, torch vs JAX."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import erf

import backends
from backends.scaled_resnet import function_distance, gaussian_pairs, init_scaled_resnet, layer_diffs
from tests.helpers import assert_close

BACKENDS = ["torch", "jax"]
ACTIVATIONS = ["gelu", "relu", "identity"]


def arrays(name: str, tree: dict, dtype: str = "float64") -> dict:
    b = backends.get(name)
    return {k: b.asarray(np.asarray(v), b.device("cpu"), dtype) for k, v in tree.items()}


def num(name: str, x) -> np.ndarray:
    return backends.get(name).to_numpy(x)


def np_act(name: str, a: np.ndarray) -> np.ndarray:
    if name == "gelu":
        return 0.5 * a * (1.0 + erf(a / math.sqrt(2.0)))
    return np.maximum(a, 0.0) if name == "relu" else a


def oracle_forward(v: np.ndarray, w: np.ndarray, x: np.ndarray, activation: str) -> np.ndarray:
    """Eq. 3.3 written literally, one layer at a time."""
    depth, q, m = v.shape
    h = x.copy()
    for k in range(depth):
        h = h + np_act(activation, h @ w[k].T / math.sqrt(q)) @ v[k].T / (depth * math.sqrt(m))
    return h


def smooth_weights(depth: int = 5, q: int = 4, m: int = 6, seed: int = 1) -> dict[str, np.ndarray]:
    """Non-zero V so every gradient path is exercised (the thesis' V = 0 start zeroes most)."""
    rng = np.random.default_rng(seed)
    return {"V": rng.standard_normal((depth, q, m)), "W": rng.standard_normal((depth, m, q))}


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_forward_matches_eq_3_3_written_literally(name, activation):
    p = smooth_weights()
    x = np.random.default_rng(2).standard_normal((7, 4))
    out = backends.get(name).ops.scaled_resnet_apply(arrays(name, p), arrays(name, {"x": x})["x"], activation)
    assert_close(num(name, out), oracle_forward(p["V"], p["W"], x, activation))


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_torch_written_out_backward_matches_autograd(activation):
    import torch

    from backends.torch.scaled_resnet import _loss_and_grads, scaled_resnet_apply

    p = {k: torch.tensor(v, requires_grad=True) for k, v in smooth_weights().items()}
    rng = np.random.default_rng(3)
    x, y = torch.tensor(rng.standard_normal((7, 4))), torch.tensor(rng.standard_normal((7, 4)))
    loss = ((scaled_resnet_apply(p, x, activation) - y) ** 2).sum() / 7
    loss.backward()
    mine_loss, mine = _loss_and_grads({k: t.detach() for k, t in p.items()}, x, y, activation)
    assert_close(mine_loss.item(), loss.item())
    for k in ("V", "W"):
        assert_close(mine[k].numpy(), p[k].grad.numpy())


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_gd_step_agrees_between_torch_and_jax_and_with_finite_differences(activation):
    p = smooth_weights()
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((7, 4)), rng.standard_normal((7, 4))
    runs = {}
    for name in BACKENDS:
        data = arrays(name, {"x": x, "y": y})
        new, losses, diffs = backends.get(name).ops.scaled_resnet_gd(
            arrays(name, p), data["x"], data["y"], 0.05, 1, activation
        )
        runs[name] = ({k: num(name, v) for k, v in new.items()}, num(name, losses), num(name, diffs))
    for a, b in zip(runs["torch"], runs["jax"]):
        if isinstance(a, dict):
            for k in a:
                assert_close(a[k], b[k])
        else:
            assert_close(a, b)
    losses, diffs = runs["torch"][1], runs["torch"][2]
    assert losses.shape == diffs.shape == (2,)
    assert_close(losses[0], ((oracle_forward(p["V"], p["W"], x, activation) - y) ** 2).sum() / 7)
    assert_close(diffs[0], layer_diffs(p["V"], p["W"]).max())
    assert_close(diffs[-1], layer_diffs(runs["torch"][0]["V"], runs["torch"][0]["W"]).max())
    assert losses[-1] < losses[0]  # small steps descend

    # the step against central finite differences of the oracle loss, on a few coordinates of W
    eps, lr, stepped = 1e-6, 0.05, runs["jax"][0]
    for idx in [(0, 1, 2), (4, 5, 3), (2, 0, 0)]:
        plus, minus = {k: v.copy() for k, v in p.items()}, {k: v.copy() for k, v in p.items()}
        plus["W"][idx] += eps
        minus["W"][idx] -= eps
        f = lambda q: ((oracle_forward(q["V"], q["W"], x, activation) - y) ** 2).sum() / 7
        assert_close(stepped["W"][idx], p["W"][idx] - lr * (f(plus) - f(minus)) / (2 * eps), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", BACKENDS)
def test_float32_runs_of_the_thesis_init_agree_across_backends(name):
    p = init_scaled_resnet(8, 16, 32, "tied", 0)
    x, y = gaussian_pairs(20, 16, 0)
    ops = backends.get(name).ops
    data = arrays(name, {"x": x, "y": y}, "float32")
    _, losses, diffs = ops.scaled_resnet_gd(arrays(name, p, "float32"), data["x"], data["y"], 8e-2, 5, "gelu")
    other = "jax" if name == "torch" else "torch"
    data_o = arrays(other, {"x": x, "y": y}, "float32")
    _, losses_o, diffs_o = backends.get(other).ops.scaled_resnet_gd(
        arrays(other, p, "float32"), data_o["x"], data_o["y"], 8e-2, 5, "gelu"
    )
    assert_close(num(name, losses), num(other, losses_o), "float32")
    assert_close(num(name, diffs), num(other, diffs_o), "float32", atol=1e-7)
    assert num(name, diffs)[0] == 0.0  # V = 0 and tied W: successive layers are equal at the start


def test_tied_init_shares_w_across_depths_and_iid_does_not():
    tied4, tied8 = init_scaled_resnet(4, 3, 5, "tied", 0), init_scaled_resnet(8, 3, 5, "tied", 0)
    assert np.all(tied4["W"] == tied8["W"][0]) and np.all(tied4["V"] == 0)
    iid = init_scaled_resnet(4, 3, 5, "iid", 0)
    assert not np.allclose(iid["W"][0], iid["W"][1])
    with pytest.raises(ValueError, match="init='smooth' is unknown; allowed: tied, iid"):
        init_scaled_resnet(4, 3, 5, "smooth", 0)


def test_function_distance_is_the_l2_norm_of_step_functions():
    rng = np.random.default_rng(5)
    v, w = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 4, 3))
    v_ref, w_ref = np.repeat(v, 4, axis=0), np.repeat(w, 4, axis=0)
    assert function_distance(v, w, v_ref, w_ref) == 0.0
    w_ref[0] += 1.0  # one eighth of [0, 1] differs by ||1_{4x3}||_F = sqrt(12)
    assert_close(function_distance(v, w, v_ref, w_ref), math.sqrt(12.0 / 8.0))
    with pytest.raises(ValueError, match="reference depth 6 is not a multiple of depth 4"):
        function_distance(v_ref[:4], w_ref[:4], v_ref[:6], w_ref[:6])


@pytest.mark.parametrize("name", BACKENDS)
def test_unknown_activation_names_the_allowed_ones(name):
    p = arrays(name, smooth_weights())
    with pytest.raises(ValueError, match="activation='tanh' is unknown; allowed: gelu, relu, identity"):
        backends.get(name).ops.scaled_resnet_apply(p, p["V"][0, :, :4], "tanh")
