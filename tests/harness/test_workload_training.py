"""``core.training.passes``: the shared training loop, on the real backends' ``timed``."""

from __future__ import annotations

import time

import numpy as np
import pytest

import backends
from core.training import Pass, passes


@pytest.mark.parametrize("name", ["torch", "jax"])
def test_timed_returns_the_value_and_at_least_a_known_sleep(name):
    backend = backends.get(name)
    seconds, value = backend.timed(lambda: time.sleep(0.05) or 7, "cpu")
    assert value == 7
    assert 0.05 <= seconds < 1.0
    assert 0.05 <= backend.time_once(lambda: time.sleep(0.05), "cpu") < 1.0


def test_jax_timed_waits_for_the_arrays_it_returns():
    import jax
    import jax.numpy as jnp

    backend = backends.get("jax")
    square = jax.jit(lambda a: a @ a)
    a = jnp.ones((64, 64), jnp.float32)
    square(a).block_until_ready()  # compiled outside the timing
    seconds, out = backend.timed(lambda: square(a), "cpu")
    assert seconds > 0 and float(out[0, 0]) == 64.0


def test_passes_yields_one_record_per_pass_drawing_orders_lazily():
    backend = backends.get("torch")
    rng = np.random.default_rng(3)
    seen = []

    def fit(step, order):
        seen.append((step, order.copy()))
        return 1.0 / step, step / 10

    orders = ((step, rng.permutation(5)) for step in range(1, 4))
    got = list(passes(backend, "cpu", fit, orders, lr=0.1))
    assert [(p.step, p.loss, p.accuracy) for p in got] == [(1, 1.0, 0.1), (2, 0.5, 0.2), (3, 1 / 3, 0.3)]
    assert all(isinstance(p, Pass) and p.seconds >= 0 for p in got)
    reference = np.random.default_rng(3)  # the hand-written loop's draws, in the same order
    assert all(np.array_equal(order, reference.permutation(5)) for _, order in seen)


def test_passes_takes_a_bare_loss_and_times_each_pass():
    backend = backends.get("jax")
    got = list(passes(backend, "cpu", lambda step, order: time.sleep(0.02) or 0.25, [(7, np.arange(3))], lr=1.0))
    assert got[0].loss == 0.25 and got[0].accuracy is None and got[0].step == 7
    assert 0.02 <= got[0].seconds < 1.0


@pytest.mark.parametrize(("loss", "text"), [(float("nan"), "nan"), (float("inf"), "inf")])
def test_a_non_finite_loss_stops_the_loop_naming_the_step_and_lr(loss, text):
    backend = backends.get("torch")
    losses = iter([0.5, loss, 0.1])
    loop = passes(
        backend,
        "cpu",
        lambda step, order: (next(losses), 1.0),
        ((s, np.arange(2)) for s in (10, 20, 30)),
        lr=0.01,
        unit="step",
    )
    assert next(loop).loss == 0.5
    with pytest.raises(FloatingPointError, match=rf"^training loss is {text} at step 20 \(lr=0\.01\)$"):
        next(loop)
