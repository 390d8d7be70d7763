"""O(T)-memory Sinkhorn attention (``impl``) in both backends: equal to the naive impl, linear memory, same errors.

The oracle is autograd (torch) / ``jax.grad`` through the naive ``attention``, which forms the T x T plan and
shares none of the blocked code; float64 everywhere, to 1e-10 (``tests.helpers``).

References:
    Thesis chapter 5, eq. 5.3, 5.4; appendix 5.B eq. 5.13.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import backends
from tests.helpers import assert_close

BACKENDS = ["torch", "jax"]
KERNEL = {"torch": "triton", "jax": "pallas"}
SHAPE = (2, 3, 37, 5)
"""(B, H, T, d): T = 37 is 4 blocks of 8 and a tail of 5."""
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _inputs(masked: bool, t: int = SHAPE[2], seed: int = 0) -> tuple[list[np.ndarray], np.ndarray | None]:
    rng = np.random.default_rng([seed, t])
    arrays = [rng.normal(size=(*SHAPE[:2], t, SHAPE[3])) for _ in range(4)]  # q, k, v, dout
    if not masked:
        return arrays, None
    mask = np.ones((SHAPE[0], 1, t), bool)
    mask[0, 0, t - 9 :] = False  # a padded tail longer than a block
    mask[1, 0, [0, 3, 17]] = False
    return arrays, mask


def _value_and_grads(name: str, fn, arrays: list[np.ndarray], mask: np.ndarray | None):
    """out = fn(q, k, v, mask) and d sum(out * dout) / d(q, k, v), by the backend's autodiff, as NumPy."""
    backends.get(name)  # loads the backend first: JAX's 64-bit mode is switched on there
    if name == "torch":
        import torch

        q, k, v = (torch.tensor(a, requires_grad=True) for a in arrays[:3])
        out = fn(q, k, v, None if mask is None else torch.tensor(mask))
        grads = torch.autograd.grad((out * torch.tensor(arrays[3])).sum(), (q, k, v))
        return out.detach().numpy(), [g.numpy() for g in grads]
    import jax
    import jax.numpy as jnp

    m = None if mask is None else jnp.asarray(mask)
    out, vjp = jax.vjp(lambda q, k, v: fn(q, k, v, m), *(jnp.asarray(a) for a in arrays[:3]))
    return np.asarray(out), [np.asarray(g) for g in vjp(jnp.asarray(arrays[3]))]


def _naive(name: str, n_iter: int):
    return lambda q, k, v, m: backends.get(name).ops.attention(q, k, v, "sinkhorn", n_iter, m)[0]


def _blocked(name: str, n_iter: int, block: int = 8):
    module = _module(name)
    return lambda q, k, v, m: module.blocked_attention(q, k, v, n_iter, m, module.primitives(block))


def _module(name: str):
    if name == "torch":
        from backends.torch import sinkhorn_blocked
    else:
        from backends.jax import sinkhorn_blocked
    return sinkhorn_blocked


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("n_iter", [1, 3, 21])
def test_blocked_equals_naive_outputs_and_gradients_in_float64(name, masked, n_iter):
    arrays, mask = _inputs(masked)
    out, grads = _value_and_grads(name, _blocked(name, n_iter), arrays, mask)
    ref, ref_grads = _value_and_grads(name, _naive(name, n_iter), arrays, mask)
    assert_close(out, ref)
    for g, r in zip(grads, ref_grads):
        assert_close(g, r)
    if mask is not None:  # padded queries get exactly 0, as in the naive plan
        assert (out[np.broadcast_to(~mask, out.shape[:-1])] == 0).all()


@pytest.mark.parametrize("masked", [False, True])
def test_torch_blocked_equals_jax_blocked(masked):
    arrays, mask = _inputs(masked, seed=1)
    res = {name: _value_and_grads(name, _blocked(name, 3, block=16), arrays, mask) for name in BACKENDS}
    assert_close(res["torch"][0], res["jax"][0])
    for a, b in zip(res["torch"][1], res["jax"][1]):
        assert_close(a, b)


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("block", [1, 37, 64])
def test_any_block_size_gives_the_same_result(name, block):
    """One key per tile, one exact tile, one tile longer than T."""
    arrays, mask = _inputs(True, seed=2)
    out, grads = _value_and_grads(name, _blocked(name, 2, block), arrays, mask)
    ref, ref_grads = _value_and_grads(name, _naive(name, 2), arrays, mask)
    assert_close(out, ref)
    assert_close(grads[1], ref_grads[1])


@pytest.mark.parametrize("name", BACKENDS)
def test_impl_blocked_and_auto_return_no_weights_on_the_cpu(name):
    b = backends.get(name)
    arrays, mask = _inputs(True, seed=3)
    q, k, v = (b.asarray(a, b.device("cpu")) for a in arrays[:3])
    m = b.asarray(mask, b.device("cpu"))
    ref, weights = b.ops.attention(q, k, v, "sinkhorn", 4, m)
    assert weights is not None
    for impl in ("blocked", "auto"):
        out, none = b.ops.attention(q, k, v, "sinkhorn", 4, m, impl=impl)
        assert none is None
        assert_close(b.to_numpy(out), b.to_numpy(ref))
    soft, _ = b.ops.attention(q, k, v, "softmax", impl="blocked")
    assert_close(b.to_numpy(soft), b.to_numpy(b.ops.attention(q, k, v, "softmax")[0]))


def test_rectangular_attention_without_mask_matches_naive():
    """Tq != Tk: columns carry Tq / Tk (log_col = log(Tq / Tk)), as in the naive plan."""
    rng = np.random.default_rng(4)
    q, k, v = rng.normal(size=(1, 2, 11, 4)), rng.normal(size=(1, 2, 19, 4)), rng.normal(size=(1, 2, 19, 3))
    for name in BACKENDS:
        b = backends.get(name)
        x = [b.asarray(a, b.device("cpu")) for a in (q, k, v)]
        ref = b.ops.attention(*x, "sinkhorn", 5)[0]
        out = _module(name).blocked_attention(*x, 5, None, _module(name).primitives(4))
        assert_close(b.to_numpy(out), b.to_numpy(ref))


@pytest.mark.parametrize("masked", [False, True])
def test_pallas_impl_equals_naive_through_the_driver(masked):
    """The kernel engineer's Pallas passes (interpreted on the CPU) under the same driver."""
    pytest.importorskip("jax.experimental.pallas")
    arrays, mask = _inputs(masked, t=21, seed=5)
    fn = lambda q, k, v, m: backends.get("jax").ops.attention(q, k, v, "sinkhorn", 3, m, impl="pallas")[0]
    out, grads = _value_and_grads("jax", fn, arrays, mask)
    ref, ref_grads = _value_and_grads("jax", _naive("jax", 3), arrays, mask)
    assert_close(out, ref)
    for g, r in zip(grads, ref_grads):
        assert_close(g, r)


_TRITON_CHILD = """
import json, sys
import numpy as np, torch
import backends
from tests.backends.test_sinkhorn_blocked import _inputs, _naive, _value_and_grads
ops = backends.get("torch").ops
res = {}
for masked in (False, True):
    arrays, mask = _inputs(masked, t=21, seed=5)
    fn = lambda q, k, v, m: ops.attention(q, k, v, "sinkhorn", 3, m, impl="triton")[0]
    out, grads = _value_and_grads("torch", fn, arrays, mask)
    ref, ref_grads = _value_and_grads("torch", _naive("torch", 3), arrays, mask)
    res[str(masked)] = [float(np.abs(a - b).max()) for a, b in zip([out, *grads], [ref, *ref_grads])]
print(json.dumps(res))
"""


def test_triton_impl_equals_naive_through_the_driver():
    """The Triton passes in Triton's CPU interpreter (it must be switched on before import: a child process)."""
    pytest.importorskip("triton")
    env = os.environ | {"TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", _TRITON_CHILD], env=env, cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    for masked, errors in json.loads(run.stdout.strip().splitlines()[-1]).items():
        assert max(errors) < 1e-10, (masked, errors)


# ---------------------------------------------------------------- bad input: one check, every impl


BAD = [
    (dict(q="nan"), "q, k, v contains NaN or"),
    (dict(k="inf"), "q, k, v contains NaN or"),
    (dict(dtype="int64"), "q, k, v: expected a floating dtype"),
    (dict(sinkhorn_iters=0), "n_iter=0"),
    (dict(sinkhorn_iters=True), "n_iter=True"),
    (dict(sinkhorn_iters=2.0), "n_iter=2.0"),
    (dict(k="short_d"), r"q, k, v: expected q \(B, H, Tq, d\)"),
    (dict(v="short_t"), r"q, k, v: expected q \(B, H, Tq, d\)"),
    (dict(q="3d"), r"q, k, v: expected \(B, H, T, d\) each"),
    (dict(mask="float"), "mask: expected a bool"),
    (dict(mask="short"), "mask: expected shape"),
    (dict(mask="batch"), "mask: expected shape"),
    (dict(normalization="sparsemax"), "normalization='sparsemax'"),
    (dict(impl="fast"), "impl='fast'"),
]


def _bad_call(name: str, bad: dict, impl: str):
    b = backends.get(name)
    arrays, _ = _inputs(False)
    q, k, v = (a.copy() for a in arrays[:3])
    mask = np.ones((SHAPE[0], 1, SHAPE[2]), bool)
    q = {"nan": np.where(np.arange(q.size).reshape(q.shape) == 5, np.nan, q), "3d": q[0]}.get(bad.get("q"), q)
    k = {"inf": np.where(np.arange(k.size).reshape(k.shape) == 7, np.inf, k), "short_d": k[..., :3]}.get(
        bad.get("k"), k
    )
    v = v[..., :-2, :] if bad.get("v") == "short_t" else v
    mask = {"float": mask.astype(np.float64), "short": mask[..., :-1], "batch": np.ones((3, 1, SHAPE[2]), bool)}.get(
        bad.get("mask"), mask
    )
    dtype = bad.get("dtype", "float64")
    x = [b.asarray(a.astype(dtype), b.device("cpu")) for a in (q, k, v)]
    kwargs = dict(normalization=bad.get("normalization", "sinkhorn"), sinkhorn_iters=bad.get("sinkhorn_iters", 3))
    return b.ops.attention(*x, **kwargs, mask=b.asarray(mask, b.device("cpu")), impl=bad.get("impl", impl))


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("impl", ["naive", "blocked", "kernel", "auto"])
@pytest.mark.parametrize("bad, match", BAD)
def test_bad_input_gives_the_same_one_line_error_in_every_impl(name, impl, bad, match):
    impl = KERNEL[name] if impl == "kernel" else impl
    with pytest.raises(ValueError, match=match) as err:
        _bad_call(name, bad, impl)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", BACKENDS)
def test_impl_of_the_other_framework_and_implicit_blocked_are_refused(name):
    b = backends.get(name)
    x = [b.asarray(a, b.device("cpu")) for a in _inputs(False)[0][:3]]
    other = KERNEL["jax" if name == "torch" else "torch"]
    with pytest.raises(ValueError, match=f"impl='{other}': allowed naive, blocked"):
        b.ops.attention(*x, "sinkhorn", impl=other)
    with pytest.raises(ValueError, match="implicit=True: only impl='naive' or 'auto'"):
        b.ops.attention(*x, "sinkhorn", implicit=True, impl="blocked")
    out, weights = b.ops.attention(*x, "sinkhorn", 30, implicit=True, impl="auto")  # auto: the naive fixed point
    assert weights is not None and np.isfinite(b.to_numpy(out)).all()


def test_sinkhorn_rejects_nan_and_integer_scores_in_both_backends():
    scores = np.random.default_rng(6).normal(size=(3, 4, 4))
    for name in BACKENDS:
        b = backends.get(name)
        with pytest.raises(ValueError, match="scores contains NaN or"):
            b.ops.sinkhorn(b.asarray(np.where(scores > 1.5, np.nan, scores), b.device("cpu")), 3)
        with pytest.raises(ValueError, match="scores: expected a floating dtype"):
            b.ops.sinkhorn(b.asarray(scores.astype(np.int64), b.device("cpu")), 3)


# ---------------------------------------------------------------- memory: linear in T


def _fit_slope(ts: list[int], nbytes: list[int]) -> float:
    return float(np.polyfit(np.log(ts), np.log(nbytes), 1)[0])


def _torch_peak(t: int, impl: str) -> int:
    """Peak host bytes torch allocates in one forward + backward at (B, H, d) = (1, 2, 16), 3 iterations."""
    import torch

    rng = np.random.default_rng(t)
    q, k, v = (torch.tensor(rng.normal(size=(1, 2, t, 16)), dtype=torch.float32, requires_grad=True) for _ in range(3))

    def step(q, k, v):
        out = backends.get("torch").ops.attention(q, k, v, "sinkhorn", 3, impl=impl)[0]
        out.sum().backward()

    return backends.get("torch").memory.host_peak_bytes(step, q, k, v)


def _jax_temp(t: int, impl: str) -> int:
    """Compiled temporary + output bytes of jit(grad) of one forward + backward (same shape as ``_torch_peak``)."""
    import jax
    import jax.numpy as jnp

    q, k, v = (jnp.zeros((1, 2, t, 16), jnp.float32) for _ in range(3))
    fn = lambda q, k, v: backends.get("jax").ops.attention(q, k, v, "sinkhorn", 3, impl=impl)[0].sum()
    return backends.get("jax").memory.peak_bytes(jax.grad(fn, argnums=(0, 1, 2)), q, k, v)


METERS = {"torch": _torch_peak, "jax": _jax_temp}


@pytest.mark.slow
@pytest.mark.parametrize("name", BACKENDS)
def test_blocked_memory_grows_linearly_and_is_a_twentieth_of_naive_at_4096(name):
    ts = [512, 1024, 2048, 4096, 8192]
    blocked = [METERS[name](t, "blocked") for t in ts]
    naive = [METERS[name](t, "naive") for t in ts[:4]]
    slope, naive_slope = _fit_slope(ts, blocked), _fit_slope(ts[:4], naive)
    assert slope <= 1.15, (slope, blocked)
    assert naive_slope >= 1.8, (naive_slope, naive)
    assert blocked[3] * 20 <= naive[3], (blocked[3], naive[3])
