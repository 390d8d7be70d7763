"""Momentum ResNets: the reversible multiplication by gamma, the exact round trip, gradients, to_momentum."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

import backends
from backends import fixed_point
from backends.init import normal
from backends.resnets import init_params, make_config

GAMMAS = ["1/2", "9/10", "99/100", "1 - 1/50000"]
RATIOS = [(1, 2), (9, 10), (99, 100), (49999, 50000), (3, 7)]


def _fixed(name: str):
    backends.get(name)  # JAX: 64-bit mode on
    if name == "torch":
        from backends.torch import _fixed
    else:
        from backends.jax import _fixed
    return _fixed


def _gamma(text: str) -> str:
    return "49999/50000" if text == "1 - 1/50000" else text


@pytest.mark.parametrize("name", ["torch", "jax"])
def test_reversible_multiplication_matches_a_big_integer_oracle_and_inverts(name):
    be, fx = backends.get(name), _fixed(name)
    rng = np.random.default_rng(0)
    c = rng.integers(-(2**61), 2**61, 200, dtype=np.int64)
    i = rng.integers(0, 2**40, 200, dtype=np.int64)
    dev = be.device("cpu")
    for n, d in RATIOS:
        c2, i2 = fx.mul_ratio(be.asarray(c, dev), be.asarray(i, dev), n, d)
        c3, i3 = fx.div_ratio(c2, i2, n, d)
        c2, i2, c3, i3 = (be.to_numpy(a) for a in (c2, i2, c3, i3))
        for k in range(len(c)):  # Python integers do not overflow: floor((c n + (i mod n)) / d)
            big = int(c[k]) * n + int(i[k]) % n
            assert int(c2[k]) == big // d and int(i2[k]) == (int(i[k]) // n) * d + big % d
            assert abs(Fraction(int(c2[k])) - Fraction(int(c[k]) * n, d)) < 2
        np.testing.assert_array_equal(c3, c)
        np.testing.assert_array_equal(i3, i)
        if name == "torch":  # the in-place versions the torch loops use give the same bits
            import torch

            ct, it = torch.from_numpy(c.copy()), torch.from_numpy(i.copy())
            work = fx.scratch(ct)
            fx.mul_ratio_(ct, it, n, d, work)
            np.testing.assert_array_equal(ct.numpy(), c2)
            np.testing.assert_array_equal(it.numpy(), i2)
            fx.div_ratio_(ct, it, n, d, work)
            np.testing.assert_array_equal(ct.numpy(), c)
            np.testing.assert_array_equal(it.numpy(), i)


@pytest.mark.parametrize("gamma", GAMMAS)
def test_buffer_words_hold_about_log2_d_over_n_bits_per_layer_and_never_overflow(gamma):
    g = fixed_point.ratio(_gamma(gamma))
    n, d, depth = g.numerator, g.denominator, 10_000
    steps, words = fixed_point.buffer_schedule(n, d, depth)
    assert words == math.ceil(depth / steps)
    bound = 0  # the largest value a word can reach after `steps` steps, in exact integers
    for _ in range(min(steps, depth)):
        bound = (bound // n) * d + d - 1
    assert bound <= 2**63 - 1
    if steps < depth:
        assert (bound // n) * d + d - 1 > 2**63 - 1  # one more step could overflow: the schedule is tight
    bits = fixed_point.buffer_bits_per_value(n, d, depth)
    assert words * 64 >= bits and words * 64 <= 1.3 * bits + 64


def _round_trip(name: str, cfg, x: np.ndarray):
    """(X_0 after forward and reverse, V_0, buffer after, buffer after the forward, X_0 expected)."""
    params = init_params(cfg, 0)
    if name == "torch":
        import torch

        from backends.torch._blocks import block_family
        from backends.torch._fixed import quantize
        from backends.torch.momentum import exact_forward, exact_reverse, exact_spec

        fam = block_family([[torch.from_numpy(params[k]) for k in ("w1", "b1", "w2", "b2")]] * cfg.depth, "mlp", "tanh")
        spec = exact_spec(Fraction(cfg.gamma_n, cfg.gamma_d), cfg.depth, cfg.scale, cfg.frac_bits)
        xt = torch.from_numpy(x)
        with torch.no_grad():
            big, vel, buf = exact_forward(fam, spec, xt)
            filled = buf.clone()
            big0, vel0, buf0, _ = exact_reverse(fam, spec, big, vel, buf, torch.float64)
        return big0.numpy(), vel0.numpy(), buf0.numpy(), filled.numpy(), quantize(xt, cfg.frac_bits)[0].numpy()
    import jax
    import jax.numpy as jnp

    from backends.jax import momentum
    from backends.jax._blocks import family
    from backends.jax._fixed import quantize

    ps = family(cfg, {k: jnp.asarray(v) for k, v in params.items()})
    big, vel, buf, bad, _ = jax.jit(lambda ps, x: momentum.exact_forward(cfg, ps, x))(ps, jnp.asarray(x))
    assert not bool(bad)
    big0, vel0, buf0, *_ = jax.jit(lambda ps, a, b, c: momentum.exact_reverse(cfg, ps, a, b, c))(ps, big, vel, buf)
    return tuple(np.asarray(a) for a in (big0, vel0, buf0, buf, quantize(jnp.asarray(x), cfg.frac_bits)[0]))


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("name", ["torch", "jax"])
def test_fixed_point_state_round_trips_exactly_through_10000_layers(name, gamma):
    cfg = make_config(
        "momentum_reversible", depth=10_000, width=4, hidden=4, tied=True, gamma=_gamma(gamma), dtype="float64"
    )
    x = normal(3, (2, 4), dtype="float64")
    big0, vel0, buf0, filled, expected = _round_trip(name, cfg, x)
    assert filled.shape == (cfg.words, 2, 4) and filled.any()  # the buffer did hold lost bits
    np.testing.assert_array_equal(big0, expected)  # x_0 bit for bit
    assert not vel0.any() and not buf0.any()  # v_0 = 0 and an empty buffer


@pytest.mark.parametrize("name,block,tied", [("torch", "mlp", False), ("jax", "mlp", False), ("torch", "conv", True)])
def test_memory_free_gradient_matches_backprop_through_eq_4_2_in_float64(name, block, tied):
    be = backends.get(name)
    dev = be.device("cpu")
    kw = dict(
        depth=12 if block == "mlp" else 4,
        width=6,
        hidden=5,
        block=block,
        tied=tied,
        gamma=0.9,
        image_size=4,
        dtype="float64",
        seed=2,
    )
    shape = (4, 6) if block == "mlp" else (4, 6, 4, 4)
    x, g = (be.asarray(normal(s, shape), dev, "float64") for s in (0, 1))
    mine = be.ops.residual_vjp(be.ops.residual_net("momentum_reversible", **kw), x, g)
    ref = be.ops.residual_vjp(be.ops.residual_net("momentum", **kw), x, g)
    assert set(mine) == set(ref)
    for tag in ref:
        a, b = be.to_numpy(mine[tag]), be.to_numpy(ref[tag])
        assert np.linalg.norm(a - b) <= 1e-8 * np.linalg.norm(b), tag


def test_torch_overflow_of_the_fixed_point_range_raises():
    be = backends.get("torch")
    net = be.ops.residual_net("momentum_reversible", depth=3, width=4, gamma=0.5, scale=1e8, dtype="float64")
    x = be.asarray(normal(0, (2, 4)), be.device("cpu"), "float64")
    with pytest.raises(OverflowError, match="frac_bits=40"):
        be.ops.residual_apply(net, x)


def test_jax_overflow_of_the_fixed_point_range_gives_nan_not_a_wrong_number():
    be = backends.get("jax")
    net = be.ops.residual_net("momentum_reversible", depth=3, width=4, gamma=0.5, scale=1e8, dtype="float64")
    x = be.asarray(normal(0, (2, 4)), be.device("cpu"), "float64")
    assert np.isnan(be.to_numpy(be.ops.residual_apply(net, x))).all()


def test_a_block_that_recomputes_different_bits_is_detected():
    import torch

    from backends.torch._blocks import Family, mlp_block
    from backends.torch.momentum import exact_spec, momentum_exact_apply

    ps = [
        torch.nn.Parameter(torch.from_numpy(normal(k, s, dtype="float64")))
        for k, s in enumerate([(5, 4), (5,), (4, 5), (4,)])
    ]
    calls = []

    def drifting(k, x):
        calls.append(k)
        return mlp_block(ps, x, "tanh") * (1 + 1e-9 * len(calls))

    fam = Family([ps] * 6, drifting)
    y = momentum_exact_apply(fam, exact_spec(Fraction(9, 10), 6, 1.0, 40), torch.randn(3, 4, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="did not return"):
        y.sum().backward()


@pytest.fixture(scope="module")
def resnet18():
    import torch
    import torchvision

    with torch.random.fork_rng():
        torch.manual_seed(0)
        return torchvision.models.resnet18(weights=None, num_classes=10)


def test_to_momentum_keeps_every_parameter_and_gamma_zero_is_the_original_net(resnet18):
    import torch

    from backends.torch.momentum import MomentumLayer, to_momentum

    model = resnet18
    mom = to_momentum(model, 0.9)
    assert isinstance(mom.layer3, MomentumLayer)
    before, after = model.state_dict(), mom.state_dict()
    assert list(before) == list(after)
    assert all(torch.equal(before[k], after[k]) for k in before)
    x = torch.randn(2, 3, 16, 16)
    plain = to_momentum(model, 0, memory_free=False)
    torch.testing.assert_close(plain(x), model(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="gamma"):
        to_momentum(model, 0)
    with pytest.raises(ValueError, match="layer1"):
        to_momentum(torch.nn.Linear(2, 2))


def test_to_momentum_memory_free_train_step_matches_backprop_and_updates_norms_once(resnet18):
    import torch

    from backends.torch.momentum import to_momentum

    model = resnet18
    torch.manual_seed(0)
    free, bp = to_momentum(model, 0.9), to_momentum(model, 0.9, memory_free=False)
    x, labels = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    for net in (free, bp):
        torch.nn.functional.cross_entropy(net(x), labels).backward()
    for (name, p), q in zip(free.named_parameters(), bp.parameters()):
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert (p.grad - q.grad).norm() <= 1e-3 * q.grad.norm(), name  # float32, fixed point vs floats
    for (name, b), c in zip(free.named_buffers(), bp.buffers()):  # the recomputation leaves norms alone
        torch.testing.assert_close(b, c, rtol=1e-5, atol=1e-6, msg=name)
    opt = torch.optim.SGD(free.parameters(), lr=0.1)
    w = free.fc.weight.detach().clone()
    opt.step()
    assert not torch.equal(w, free.fc.weight)
