"""Adjoint ResNet and HeunNet (section 2.4): approximate reversal whose errors shrink with depth."""

from __future__ import annotations

import numpy as np
import pytest

import backends
from backends.init import normal

KW = dict(width=6, hidden=5, dtype="float64", seed=1)


def _rel_errors(be, model: str, depth: int, tied: bool) -> dict[str, float]:
    dev = be.device("cpu")
    x, g = (be.asarray(normal(s, (4, 6)), dev, "float64") for s in (0, 1))
    mine = be.ops.residual_vjp(be.ops.residual_net(model, depth=depth, tied=tied, **KW), x, g)
    ref = be.ops.residual_vjp(be.ops.residual_net(model, depth=depth, tied=tied, backprop=True, **KW), x, g)
    return {
        k: float(np.linalg.norm(be.to_numpy(mine[k]) - be.to_numpy(ref[k])) / np.linalg.norm(be.to_numpy(ref[k])))
        for k in ref
    }


@pytest.mark.parametrize("name", ["torch", "jax"])
@pytest.mark.parametrize("model", ["adjoint_euler", "adjoint_heun"])
def test_adjoint_gradient_error_against_backprop_shrinks_with_depth(name, model):
    be = backends.get(name)
    shallow, deep = _rel_errors(be, model, 8, False), _rel_errors(be, model, 64, False)
    assert max(deep.values()) < 0.5 * max(shallow.values()), (shallow, deep)
    assert 0 < max(deep.values()) < 1e-2  # approximate, not exact


@pytest.mark.parametrize("name", ["torch", "jax"])
def test_adjoint_gradients_agree_between_backends(name):
    other = "jax" if name == "torch" else "torch"
    a, b = (
        _rel_errors(backends.get(name), "adjoint_heun", 8, False),
        _rel_errors(backends.get(other), "adjoint_heun", 8, False),
    )
    for k in a:
        assert abs(a[k] - b[k]) <= 1e-6 * b[k] + 1e-12, k


def _recon_error(model: str, depth: int, tied: bool) -> float:
    be = backends.get("torch")
    net = be.ops.residual_net(model, depth=depth, tied=tied, **KW)
    x = be.asarray(normal(0, (4, 6)), be.device("cpu"), "float64")
    seen, back = be.ops.residual_trajectory(net, x), be.ops.residual_reconstruct(net, x)
    assert tuple(seen.shape) == tuple(back.shape) == (depth + 1, 4, 6)
    return float((seen - back).abs().max())


def test_euler_reconstruction_error_falls_like_one_over_depth():
    errors = [_recon_error("adjoint_euler", n, True) for n in (16, 64, 256)]
    slope = np.polyfit(np.log([16, 64, 256]), np.log(errors), 1)[0]
    assert -1.3 < slope < -0.7, errors  # Prop. 2.9


def test_heun_reconstructs_smooth_weights_better_than_euler():
    assert _recon_error("adjoint_heun", 32, True) < 1e-2 * _recon_error("adjoint_euler", 32, True)  # Prop. 2.11


@pytest.mark.parametrize("name", ["torch", "jax"])
def test_adjoint_gradient_is_exact_when_f_is_zero(name):
    be = backends.get(name)
    dev = be.device("cpu")
    zero = {"w2": np.zeros((8, 6, 5)), "b2": np.zeros((8, 6))}
    x, g = (be.asarray(normal(s, (4, 6)), dev, "float64") for s in (0, 1))
    mine = be.ops.residual_vjp(be.ops.residual_net("adjoint_euler", depth=8, weights=zero, **KW), x, g)
    ref = be.ops.residual_vjp(be.ops.residual_net("resnet", depth=8, weights=zero, **KW), x, g)
    for k in ref:
        np.testing.assert_allclose(be.to_numpy(mine[k]), be.to_numpy(ref[k]), rtol=1e-13, atol=1e-15, err_msg=k)
    with pytest.raises(ValueError, match=r"weights\['w2'\] has shape \(6, 5\); expected \(8, 6, 5\)"):
        be.ops.residual_net("resnet", depth=8, weights={"w2": np.zeros((6, 5))}, **KW)


@pytest.mark.parametrize("name", ["torch", "jax"])
def test_adjoint_backward_keeps_only_the_output(name):
    be = backends.get(name)
    dev = be.device("cpu")
    x = be.asarray(normal(0, (4, 6)), dev, "float64")
    sizes = {}
    for depth in (4, 32):
        forward, _, params = be.ops.residual_functional(be.ops.residual_net("adjoint_euler", depth=depth, **KW))
        sizes[depth] = be.memory.saved_bytes(forward, params, x)
    assert sizes[4] == sizes[32] == 4 * 6 * 8
