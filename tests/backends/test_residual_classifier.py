"""The section 2.5.2 classifier: torch and JAX agree through training, the adjoint differs from backprop only through f."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import backends
from backends.init import normal
from backends.residual_classifier import ClassifierConfig
from tests.helpers import assert_close

CASES = [(s, b) for s in ("euler", "heun") for b in ("adjoint", "backprop")]


def _data(n: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    return normal(seed, (n, 1, 6, 6)), np.random.default_rng(seed).integers(0, 4, n)


def _config(scheme: str, backward: str, depth: int = 3) -> ClassifierConfig:
    return ClassifierConfig(
        scheme=scheme, backward=backward, depth=depth, width=4, image_size=6, classes=4, dtype="float64"
    )


def _trained(name: str, config: ClassifierConfig, params_np: dict | None = None) -> dict[str, np.ndarray]:
    """Weights after two epochs of two minibatches (lr 0.5 then 0.25), flattened to name -> array."""
    be = backends.get(name)
    dev = be.device("cpu")
    x_np, y_np = _data()
    x, y = be.asarray(x_np, dev, "float64"), be.asarray(y_np, dev)
    params = be.ops.residual_classifier_init(config, 7, dev)
    trainer = be.ops.residual_classifier_trainer(config, params)
    trainer.compile(x, y, 12)
    for epoch, lr in enumerate((0.5, 0.25)):
        trainer.fit_epoch(x, y, np.random.default_rng(epoch).permutation(24), 12, lr)
    flat = {k: v for k, v in trainer.params.items() if k != "body"} | {
        f"body.{k}": v for k, v in trainer.params["body"].items()
    }
    return {k: np.asarray(be.to_numpy(v) if name == "torch" else v) for k, v in flat.items()}


@pytest.mark.parametrize("scheme,backward", CASES)
def test_torch_and_jax_agree_after_training_steps(scheme, backward):
    config = _config(scheme, backward)
    torch_w, jax_w = _trained("torch", config), _trained("jax", config)
    assert torch_w.keys() == jax_w.keys()
    for key in torch_w:
        assert_close(torch_w[key], jax_w[key], "float64", atol=1e-10, err_msg=key)
    assert np.abs(torch_w["body.bn3.weight"]).max() > 1e-4  # the residual blocks did move


@pytest.mark.parametrize("name", ["torch", "jax"])
def test_logits_do_not_depend_on_depth_at_init_the_residual_part_is_the_identity(name):
    be = backends.get(name)
    dev = be.device("cpu")
    x_np, _ = _data()
    logits = {}
    for depth in (1, 4):
        config = _config("heun", "adjoint", depth)
        params = be.ops.residual_classifier_init(config, 7, dev)
        logits[depth] = np.asarray(
            be.to_numpy(be.ops.residual_classifier_apply(params, be.asarray(x_np, dev, "float64"), config))
        )
    assert logits[1].shape == (24, 4)
    np.testing.assert_allclose(logits[1], logits[4], atol=1e-12)  # bn3 weight 0: f = 0 at every depth


def _gradients(name: str, config: ClassifierConfig, bn3: float) -> dict[str, np.ndarray]:
    """Gradient of the summed logits against a fixed cotangent, with every bn3 weight set to ``bn3``."""
    be = backends.get(name)
    dev = be.device("cpu")
    params = be.ops.residual_classifier_init(config, 7, dev)
    x_np, _ = _data()
    x = be.asarray(x_np, dev, "float64")
    ct = normal(3, (24, 4)).astype(np.float64)
    if name == "torch":
        params["body"]["bn3.weight"] = torch.full_like(params["body"]["bn3.weight"], bn3)
        leaves = {k: v.requires_grad_() for k, v in params["body"].items()}
        (be.ops.residual_classifier_apply(params, x, config) * torch.from_numpy(ct)).sum().backward()
        return {k: v.grad.numpy() for k, v in leaves.items()}
    params["body"]["bn3.weight"] = jnp.full_like(params["body"]["bn3.weight"], bn3)
    return {k: np.asarray(v) for k, v in _jax_gradients(config, params, x, ct)["body"].items()}


@functools.partial(jax.jit, static_argnums=0)
def _jax_gradients(config: ClassifierConfig, params: dict, x: jax.Array, ct: np.ndarray) -> dict:
    """Compiled once per config: the gradient of <logits, ct> in JAX."""
    apply = backends.get("jax").ops.residual_classifier_apply
    return jax.grad(lambda p: jnp.sum(apply(p, x, config) * ct))(params)


def _relative_error(name: str, scheme: str, depth: int, bn3: float) -> float:
    """max over the residual tensors of ||g_adjoint - g_backprop|| / ||g_backprop||."""
    adj, ref = (_gradients(name, _config(scheme, b, depth), bn3) for b in ("adjoint", "backprop"))
    return max(float(np.linalg.norm(adj[k] - ref[k]) / np.linalg.norm(ref[k])) for k in ref)


@pytest.mark.parametrize("name", ["torch", "jax"])
@pytest.mark.parametrize("scheme", ["euler", "heun"])
def test_adjoint_gradient_is_exact_when_f_is_zero_only(name, scheme):
    exact = [_gradients(name, _config(scheme, b, depth=2), bn3=0.0) for b in ("adjoint", "backprop")]
    for key in exact[1]:
        assert_close(exact[0][key], exact[1][key], "float64", atol=1e-12, err_msg=key)
    assert _relative_error(name, scheme, 2, 1.0) > 1e-3  # the reversal is approximate once f moves


@pytest.mark.parametrize("scheme", ["euler", "heun"])
def test_adjoint_gradient_error_falls_with_depth(scheme):
    shallow, deep = _relative_error("torch", scheme, 2, 1.0), _relative_error("torch", scheme, 8, 1.0)
    assert deep < 0.5 * shallow, (shallow, deep)  # Prop. 2.10, 2.12 (JAX: same weights, agreement tested above)


def test_config_errors_name_what_is_allowed():
    with pytest.raises(ValueError, match="scheme='rk4' is unknown; allowed: euler, heun"):
        ClassifierConfig(scheme="rk4")
    with pytest.raises(ValueError, match="backward='checkpoint' is unknown; allowed: adjoint, backprop"):
        ClassifierConfig(backward="checkpoint")
    with pytest.raises(ValueError, match="depth=0"):
        ClassifierConfig(depth=0)


def test_unrolled_depth_loops_give_the_same_training():
    rolled = _trained("jax", _config("heun", "adjoint"))
    unrolled = _trained("jax", dataclasses.replace(_config("heun", "adjoint"), unroll=True))
    for key in rolled:
        assert_close(unrolled[key], rolled[key], "float64", atol=1e-12, err_msg=key)
