"""The JAX optimisers (optax) step as ``torch.optim`` does, and the JAX trainers' shared minibatching."""

from __future__ import annotations

import numpy as np
import pytest

import backends


@pytest.mark.parametrize(
    ("optimizer", "momentum", "weight_decay"), [("adam", 0.9, 0.0), ("sgd", 0.9, 0.0), ("momentum", 0.9, 5e-4)]
)
def test_jax_optimiser_steps_as_torch_optim(optimizer, momentum, weight_decay):
    import jax.numpy as jnp
    import torch

    backends.get("jax")  # 64-bit types on
    from backends.jax import _optim

    rng = np.random.default_rng(0)
    start = {"w": rng.normal(size=(4, 3)), "b": rng.normal(size=3)}
    grads = [{k: rng.normal(size=v.shape) for k, v in start.items()} for _ in range(5)]
    lrs = [0.1, 0.05, 0.02, 0.01, 0.005]  # a schedule, as the residual classifier sets one per epoch

    leaves = {k: torch.tensor(v, requires_grad=True) for k, v in start.items()}
    if optimizer == "adam":
        opt = torch.optim.Adam(leaves.values(), lr=lrs[0], weight_decay=weight_decay)
    else:
        mom = momentum if optimizer == "momentum" else 0.0
        opt = torch.optim.SGD(leaves.values(), lr=lrs[0], momentum=mom, weight_decay=weight_decay)
    params = {k: jnp.asarray(v) for k, v in start.items()}
    state = _optim.init(optimizer, params)
    for lr, g in zip(lrs, grads, strict=True):
        for group in opt.param_groups:
            group["lr"] = lr
        for k, t in leaves.items():
            t.grad = torch.tensor(g[k])
        opt.step()
        jg = {k: jnp.asarray(v) for k, v in g.items()}
        params, state = _optim.update(optimizer, params, jg, state, jnp.asarray(lr), momentum, weight_decay)
    for k, t in leaves.items():
        np.testing.assert_allclose(np.asarray(params[k]), t.detach().numpy(), rtol=1e-12, atol=1e-14)
        assert not np.allclose(np.asarray(params[k]), start[k])  # the steps moved it


def test_unknown_optimiser_names_the_allowed_ones():
    backends.get("jax")
    from backends.jax import _optim

    with pytest.raises(ValueError, match="optimizer='adamw': allowed adam, sgd, momentum"):
        _optim.init("adamw", {})


def test_minibatches_drop_the_incomplete_last_one_and_name_what_is_too_small():
    backends.get("jax")
    from backends.jax._trainer import minibatch_index

    idx = minibatch_index(np.array([4, 0, 3, 1, 2]), 2)
    assert idx.dtype == np.int64 and idx.tolist() == [[4, 0], [3, 1]]
    with pytest.raises(ValueError, match=r"^batch=8: larger than the 5 training sequences$"):
        minibatch_index(np.arange(5), 8, "training sequences")
