"""The residual-network constructor: both backends agree, errors are clear, memory-free models stay flat."""

from __future__ import annotations

import numpy as np
import pytest

import backends
from backends.init import normal
from backends.resnets import MODELS
from tests.helpers import assert_close

KW = dict(depth=6, width=5, hidden=7, dtype="float64", seed=3)


def _x(be, shape, seed=0, dtype="float64"):
    return be.asarray(normal(seed, shape), be.device("cpu"), dtype)


@pytest.mark.parametrize("model", MODELS)
def test_torch_and_jax_agree_on_the_forward_from_the_same_seed(model):
    out = {}
    for name in ("torch", "jax"):
        be = backends.get(name)
        out[name] = be.to_numpy(be.ops.residual_apply(be.ops.residual_net(model, **KW), _x(be, (3, 5))))
    assert_close(out["torch"], out["jax"], "float64", atol=1e-12)
    assert np.abs(out["torch"]).max() > 0.1


@pytest.mark.parametrize("block,activation", [("conv", "relu"), ("conv_norm", "gelu"), ("mlp", "gelu")])
def test_blocks_and_activations_agree_between_backends(block, activation):
    out = {}
    bn3 = (
        {"bn3.weight": np.full((KW["depth"] + 1, KW["width"]), 0.5)} if block == "conv_norm" else None
    )  # not the zero init
    shape = (3, 5) if block == "mlp" else (3, 5, 4, 4)
    for name in ("torch", "jax"):
        be = backends.get(name)
        net = be.ops.residual_net("adjoint_heun", block=block, image_size=4, activation=activation, weights=bn3, **KW)
        x = _x(be, shape)
        out[name] = be.to_numpy(be.ops.residual_apply(net, x)) - be.to_numpy(x)
    assert_close(out["torch"], out["jax"], "float64", atol=1e-12)
    assert np.abs(out["torch"]).max() > 1e-3  # the blocks did something


@pytest.mark.parametrize("name", ["torch", "jax"])
@pytest.mark.parametrize("model", ["momentum_reversible", "revnet"])
def test_exact_models_reconstruct_every_activation_and_match_backprop(name, model):
    be = backends.get(name)
    net, ref = be.ops.residual_net(model, **KW), be.ops.residual_net(model, backprop=True, **KW)
    x, g = _x(be, (3, 5)), _x(be, (3, 5), 1)
    seen, back = be.to_numpy(be.ops.residual_trajectory(net, x, 2)), be.to_numpy(be.ops.residual_reconstruct(net, x, 2))
    assert seen.shape == (4, 3, 5)
    np.testing.assert_array_equal(seen, back)
    mine, theirs = be.ops.residual_vjp(net, x, g), be.ops.residual_vjp(ref, x, g)
    for k in theirs:
        a, b = be.to_numpy(mine[k]), be.to_numpy(theirs[k])
        assert np.linalg.norm(a - b) <= 1e-8 * np.linalg.norm(b), k
    if not be.to_numpy(mine["input"]).any():
        pytest.fail("no input gradient")


def test_momentum_without_buffer_loses_precision_the_buffer_does_not():
    be = backends.get("torch")
    kw = dict(KW, depth=40, gamma=0.5)
    x = _x(be, (3, 5))
    errs = {}
    for model in ("momentum", "momentum_reversible"):
        net = be.ops.residual_net(model, **kw)
        errs[model] = np.abs(
            be.to_numpy(be.ops.residual_trajectory(net, x, 40))[0]
            - be.to_numpy(be.ops.residual_reconstruct(net, x, 40))[0]
        ).max()
    assert errs["momentum_reversible"] == 0 and errs["momentum"] > 1e-6  # 2**40 rounding growth at gamma 1/2


@pytest.mark.parametrize("name", ["torch", "jax"])
def test_saved_bytes_stay_flat_with_depth_for_memory_free_models_and_grow_for_backprop(name):
    be = backends.get(name)
    x = _x(be, (4, 8), dtype="float32")
    saved = {}
    for model in ("resnet", "checkpoint", "momentum_reversible", "revnet"):
        for depth in (4, 16):
            forward, _, params = be.ops.residual_functional(be.ops.residual_net(model, depth=depth, width=8, tied=True))
            saved[model, depth] = be.memory.saved_bytes(forward, params, x)
    per_layer = {
        m: (saved[m, 16] - saved[m, 4]) / 12 for m in ("resnet", "checkpoint", "momentum_reversible", "revnet")
    }
    activation = 4 * 8 * 4
    assert per_layer["resnet"] >= 2 * activation
    assert activation <= per_layer["checkpoint"] < per_layer["resnet"]
    assert per_layer["momentum_reversible"] == per_layer["revnet"] == 0
    assert saved["momentum_reversible", 4] == 3 * 4 * 8 * 8  # X_N, V_N and one buffer word, int64


def test_host_peak_counts_a_known_allocation():
    import jax.numpy as jnp
    import torch

    be = backends.get("torch")
    peak = be.memory.host_peak_bytes(lambda n: torch.ones(n, dtype=torch.float64).sum(), 2**17)
    assert 2**20 <= peak < 2**20 + 4096
    jax_memory = backends.get("jax").memory  # loading the backend turns on 64-bit types
    x = jnp.ones(2**17, jnp.float64)  # JAX: the compiled executable's bytes, here its 1 MiB output
    assert 2**20 <= jax_memory.host_peak_bytes(lambda a: a * 2.0, x) < 2**20 + 4096


@pytest.mark.parametrize("name", ["torch", "jax"])
def test_bad_arguments_are_clear_errors(name):
    be = backends.get(name)
    with pytest.raises(ValueError, match=r"gamma=1\.5 is outside \[0, 1\]"):
        be.ops.residual_net("momentum", depth=3, width=4, gamma=1.5)
    with pytest.raises(ValueError, match=r"gamma=-0\.1 is outside"):
        be.ops.residual_net("momentum_reversible", depth=3, width=4, gamma=-0.1)
    with pytest.raises(ValueError, match="gamma=0: momentum_reversible needs gamma in"):
        be.ops.residual_net("momentum_reversible", depth=3, width=4, gamma=0)
    with pytest.raises(ValueError, match="depth=0 must be an integer >= 1"):
        be.ops.residual_net("resnet", depth=0, width=4)
    with pytest.raises(ValueError, match="width is required"):
        be.ops.residual_net("resnet", depth=3)
    with pytest.raises(ValueError, match="model='resnett' is unknown; allowed: resnet, checkpoint"):
        be.ops.residual_net("resnett", depth=3, width=4)
    net = be.ops.residual_net("resnet", depth=3, width=4)
    with pytest.raises(ValueError, match=r"x has shape \(2, 5\); this mlp net takes \(batch, 4\)"):
        be.ops.residual_apply(net, _x(be, (2, 5), dtype="float32"))
    with pytest.raises(ValueError, match=r"x has dtype .*float64.*runs in float32"):
        be.ops.residual_apply(net, _x(be, (2, 4)))
    with pytest.raises(ValueError, match="every=0 must be an integer >= 1"):
        be.ops.residual_trajectory(net, _x(be, (2, 4), dtype="float32"), 0)


def test_torchvision_blocks_are_torch_only():
    with pytest.raises(NotImplementedError, match="torch backend only"):
        backends.get("jax").ops.residual_net("momentum_reversible", block="resnet18")
    with pytest.raises(ValueError, match="model='revnet' with block='resnet18'"):
        backends.get("torch").ops.residual_net("revnet", block="resnet18")


def test_jax_compiled_memory_of_memory_free_models_is_flat_in_depth_even_untied():
    import jax

    be = backends.get("jax")
    x, g = _x(be, (64, 8), dtype="float32"), _x(be, (64, 8), 1, dtype="float32")
    for model in ("momentum_reversible", "revnet", "adjoint_heun"):
        temp = {}
        for depth in (4, 16):
            _, step, params = be.ops.residual_functional(be.ops.residual_net(model, depth=depth, width=8))
            grads = (sum(a.size for a in jax.tree_util.tree_leaves(params)) + x.size) * 4  # what step returns
            temp[depth] = be.memory.peak_bytes(step, params, x, g) - grads
        assert abs(temp[16] - temp[4]) / 12 < 0.02 * 64 * 8 * 4, (model, temp)  # under 2% of an activation a layer
