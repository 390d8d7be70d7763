"""The roofline operators agree between torch and JAX, and the backend meters measure real things."""

from __future__ import annotations

import time

import numpy as np
import pytest

import backends
from backends.init import normal
from tests.helpers import assert_close, dtype_eps


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_matmul_and_copy_agree_between_backends(dtype):
    a, b = normal(0, (48, 32)), normal(1, (32, 40))
    out = {}
    for name in backends.names():
        be = backends.get(name)
        dev = be.device("cpu")
        x, y = be.asarray(a, dev, dtype), be.asarray(b, dev, dtype)
        out[name] = (be.to_numpy(be.ops.matmul(x, y)), be.to_numpy(be.ops.copy(x)), be.to_numpy(x) @ be.to_numpy(y))
    scale = np.abs(out["torch"][2]).max()
    assert_close(out["torch"][0], out["jax"][0], dtype, atol=dtype_eps(dtype) * scale)
    assert_close(out["torch"][1], out["jax"][1], dtype)
    assert_close(out["torch"][0], out["torch"][2], dtype, atol=dtype_eps(dtype) * scale)  # float64 oracle


@pytest.mark.parametrize("name", ["torch", "jax"])
def test_timer_keeps_every_sample_and_measures_a_known_sleep(name):
    be = backends.get(name)
    calls = []
    samples = backends.timer(be, lambda: (calls.append(1), time.sleep(0.02)), kind="cpu", warmup=2, repeats=4)
    assert len(samples) == 4 and len(calls) == 6
    assert all(0.019 <= s < 0.2 for s in samples)


def test_unknown_device_is_a_clear_error():
    for name in backends.names():
        with pytest.raises(backends.DeviceUnavailable, match="not available here; available: cpu"):
            backends.get(name).device("tpu" if name == "torch" else "cuda")


def test_torch_saved_bytes_counts_activations_not_parameters():
    import torch

    w = torch.nn.Parameter(torch.randn(64, 64))
    x = torch.randn(32, 64)
    saved = backends.get("torch").memory.saved_bytes(lambda x: torch.tanh(x @ w).sum(), x)
    assert saved == 32 * 64 * 4  # tanh's output; x and w are not counted


def test_jax_meters_count_residuals_and_compiled_temporaries():
    import jax.numpy as jnp

    be = backends.get("jax")
    w = jnp.ones((64, 64), jnp.float32)
    x = jnp.ones((32, 64), jnp.float32)
    saved = be.memory.saved_bytes(lambda x: jnp.tanh(x @ w).sum(), x)
    assert saved >= 32 * 64 * 4
    assert be.memory.peak_bytes(lambda x: jnp.tanh(x @ w), x) >= 32 * 64 * 4
