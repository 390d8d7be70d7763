"""Fused Sinkhorn-attention kernels (Triton for torch, Pallas for JAX) in their CPU interpreters, vs float64 NumPy.

Each primitive (row/column log-sum-exp, E x and E^T x, the q/k gradient pass) is checked against the dense
T x T computation, then the whole attention (outputs and gradients) run by the blocked driver
(``backends/sinkhorn_blocked.py``) on the kernels, against autograd through the naive ``attention``. The
Triton interpreter needs ``TRITON_INTERPRET=1`` before triton is imported, so its kernels run in a child
process (``_triton_worker``, one per interpreter run) and the comparisons happen here.

References:
    Thesis chapter 5 (Sinkformers), appendix 5.B eq. 5.13.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import backends
from backends import sinkhorn_blocked as driver
from tests.helpers import assert_close

BLOCK = 16
PRIM_CASES = [(t, masked, "float64") for t in (1, 7, 33, 64) for masked in (False, True)] + [(33, True, "float32")]
"""(T, masked, dtype) of the primitive checks: T = 1, a tail shorter than the block, several blocks."""
ATTN_CASES = [(33, True, 1), (33, True, 3), (20, True, 21), (33, False, 3)]
"""(T, masked, n_iter) of the whole-attention checks (float64, block 16)."""
PUBLIC_CASE = (33, True, 3)
"""(T, masked, n_iter) run through ``attention(..., impl="triton" | "pallas")`` at its default block."""
FAST = {
    "triton": (PRIM_CASES, ATTN_CASES, [], [PUBLIC_CASE]),
    "pallas": (
        [(7, False, "float64"), (33, True, "float64"), (33, True, "float32")],
        [(33, True, 3), (20, True, 21)],
        [],
        [PUBLIC_CASE],
    ),
}
"""(primitive, attention, long, public) cases each interpreter runs in the default suite, in one go (Pallas
compiles each shape: it runs fewer); every other case is a slow test of its own."""
LONG_CASES = [(100, True, 5, 32), (64, False, 21, 16)]
"""(T, masked, n_iter, block) checked by the slow tests."""
ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- the float64 dense reference


def _inputs(t: int, masked: bool, seed: int = 0) -> dict[str, np.ndarray | None]:
    """q, k (B, H, T, d), v, dout (B, H, T, e), potentials f, g, vectors x and a (B, 1, T) padding mask."""
    rng = np.random.default_rng([seed, t, masked])
    b, h, d, e = 1, 2, 8, 6  # the (1, 1, T) mask is broadcast over the heads
    q, k = rng.normal(size=(2, b, h, t, d))
    v, dout = rng.normal(size=(2, b, h, t, e))
    mask = None
    if masked:
        mask = rng.random((b, 1, t)) < 0.8
        mask[..., 0] = True
        mask[..., t - t // 4 :] = False  # a padded tail
    f, g = rng.normal(size=(2, b, h, t))
    return dict(q=q, k=k, v=v, dout=dout, f=f, g=g, x=rng.normal(size=(b, h, t, 5)), mask=mask)


def _dense(q: np.ndarray, k: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    s = q @ np.swapaxes(k, -1, -2) * q.shape[-1] ** -0.5
    if mask is None:
        return s, np.ones(s.shape, bool)
    m = np.broadcast_to(mask, q.shape[:-1])
    return s, m[..., :, None] & m[..., None, :]


def _lse(x: np.ndarray, valid: np.ndarray, axis: int) -> np.ndarray:
    top = np.where(valid, x, -np.inf).max(axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    total = np.where(valid, np.exp(np.where(valid, x - top, 0.0)), 0.0).sum(axis)
    return np.where(valid.any(axis), np.squeeze(top, axis) + np.log(np.where(total > 0, total, 1.0)), 0.0)


def _e(q, k, a, b, mask) -> np.ndarray:
    s, valid = _dense(q, k, mask)
    return np.where(valid, np.exp(np.where(valid, s + a[..., :, None] + b[..., None, :], 0.0)), 0.0)


def ref_row_lse(q, k, g, mask):
    s, valid = _dense(q, k, mask)
    return _lse(s + g[..., None, :], valid, -1)


def ref_col_lse(q, k, f, mask):
    s, valid = _dense(q, k, mask)
    return _lse(s + f[..., :, None], valid, -2)


def ref_apply(q, k, a, b, x, mask, transpose=False):
    e = _e(q, k, a, b, mask)
    return (np.swapaxes(e, -1, -2) if transpose else e) @ x


def ref_grad_qk(q, k, v, dout, steps, mask):
    """dC = P o (dout v^T) - sum_row w_t 1^T o E_t - sum_col E_t o 1 w_t^T, then dq = s dC k, dk = s dC^T q."""
    dc = _e(q, k, steps.a[-1], steps.b[-1], mask) * (dout @ np.swapaxes(v, -1, -2))
    for t, (a, b, w) in enumerate(zip(*steps, strict=True)):
        dc -= _e(q, k, a, b, mask) * (w[..., :, None] if t % 2 == 0 else w[..., None, :])
    scale = q.shape[-1] ** -0.5
    return scale * dc @ k, scale * np.swapaxes(dc, -1, -2) @ q


def ref_attention(q, k, v, dout, n_iter, mask):
    """Output, (dq, dk, dv) and the gradient pass' steps of the blocked driver's recursion on dense NumPy passes."""
    seen = []

    def grad_qk(*args):
        seen.append(args[4])
        return ref_grad_qk(*args)

    prims = driver.Primitives("dense", ref_row_lse, ref_col_lse, ref_apply, grad_qk)
    a, b = driver.forward(prims, np, q, k, n_iter, mask, 0.0)
    out = ref_apply(q, k, a[-1], b[-1], v, mask)
    return (out, *driver.backward(prims, np, q, k, v, out, dout, a, b, mask)), seen[0]


def _naive_autograd(q, k, v, dout, n_iter, mask):
    """Output and (dq, dk, dv) of the naive torch ``attention`` by autograd, float64."""
    import torch

    from backends.torch.sinkhorn import attention

    leaves = [torch.tensor(z, requires_grad=True) for z in (q, k, v)]
    out, _ = attention(*leaves, "sinkhorn", n_iter, None if mask is None else torch.tensor(mask))
    out.backward(torch.tensor(dout))
    return (out.detach().numpy(), *(z.grad.numpy() for z in leaves))


# ---------------------------------------------------------------- running the kernels


def _prim_outputs(prims, to, back, t, masked, dtype):
    inp = _inputs(t, masked)
    c = {n: (a if n == "mask" or a is None else a.astype(dtype)) for n, a in inp.items()}
    q, k, m = to(c["q"]), to(c["k"]), None if c["mask"] is None else to(c["mask"])
    steps = ref_attention(*(inp[n] for n in ("q", "k", "v", "dout")), 3, inp["mask"])[1]
    dq, dk = prims.grad_qk(q, k, to(c["v"]), to(c["dout"]), driver.Steps(*(to(z.astype(dtype)) for z in steps)), m)
    return {
        "row_lse": back(prims.row_lse(q, k, to(c["g"]), m)),
        "col_lse": back(prims.col_lse(q, k, to(c["f"]), m)),
        "apply": back(prims.apply(q, k, to(c["f"]), to(c["g"]), to(c["x"]), m, False)),
        "apply_t": back(prims.apply(q, k, to(c["f"]), to(c["g"]), to(c["x"]), m, True)),
        "dq": back(dq),
        "dk": back(dk),
    }


def _torch_attention(prims, t, masked, n_iter):
    """Output and (dq, dk, dv) of the torch driver on ``prims`` (or ``attention(impl=prims)``), by autograd."""
    import torch

    from backends.torch.sinkhorn import attention
    from backends.torch.sinkhorn_blocked import blocked_attention

    inp = _inputs(t, masked, seed=1)
    leaves = [torch.tensor(inp[n], requires_grad=True) for n in ("q", "k", "v")]
    mask = None if inp["mask"] is None else torch.tensor(inp["mask"])
    if isinstance(prims, str):
        out, weights = attention(*leaves, "sinkhorn", n_iter, mask, impl=prims)
        assert weights is None
    else:
        out = blocked_attention(*leaves, n_iter, mask, prims)
    out.backward(torch.tensor(inp["dout"]))
    return {"out": out.detach().numpy(), **{n: z.grad.numpy() for n, z in zip(("dq", "dk", "dv"), leaves)}}


def _jax_attention(prims, t, masked, n_iter):
    """Output and (dq, dk, dv) of the JAX driver on ``prims`` (or ``attention(impl=prims)``), by ``jax.vjp``."""
    import jax
    import jax.numpy as jnp

    from backends.jax.sinkhorn import attention
    from backends.jax.sinkhorn_blocked import blocked_attention

    def run(q, k, v):
        if isinstance(prims, str):
            return attention(q, k, v, "sinkhorn", n_iter, mask, impl=prims)[0]
        return blocked_attention(q, k, v, n_iter, mask, prims)

    inp = _inputs(t, masked, seed=1)
    mask = None if inp["mask"] is None else jnp.asarray(inp["mask"])
    qkv = [jnp.asarray(inp[n]) for n in ("q", "k", "v")]
    out, vjp = jax.vjp(run, *qkv)
    grads = vjp(jnp.asarray(inp["dout"]))
    return {"out": np.asarray(out), **{n: np.asarray(z) for n, z in zip(("dq", "dk", "dv"), grads)}}


def _all_outputs(impl: str, cases: tuple[list, ...]) -> dict[str, np.ndarray]:
    """Kernel outputs of the (primitive, attention at block 16, attention at any block, public) cases, by key."""
    if impl == "triton":
        import torch

        from backends.torch import sinkhorn_triton as mod

        to, back, attention = torch.from_numpy, lambda x: x.numpy(), _torch_attention
    else:
        import jax.numpy as jnp

        from backends.jax import sinkhorn_pallas as mod

        to, back, attention = jnp.asarray, np.asarray, _jax_attention
    prim_cases, attn_cases, long_cases, public_cases = cases
    res = {}
    for case in prim_cases:
        for name, a in _prim_outputs(mod.primitives(BLOCK), to, back, *case).items():
            res[f"prim{tuple(case)}/{name}"] = a
    for case in [(*c, BLOCK) for c in attn_cases] + list(long_cases):
        for name, a in attention(mod.primitives(case[3]), *case[:3]).items():
            res[f"attn{tuple(case)}/{name}"] = a
    for case in public_cases:  # the user's path: attention(..., impl=...) at the default block
        for name, a in attention(impl, *case).items():
            res[f"public{tuple(case)}/{name}"] = a
    return res


def _triton_worker(path: str, cases: tuple[list, ...]) -> None:
    """Child-process entry: the Triton cases, run in the interpreter, saved to ``path`` (.npz)."""
    import torch

    torch.set_num_threads(1)
    np.savez(path, **_all_outputs("triton", cases))


def _outputs(impl: str, tmp_path_factory, cases: tuple[list, ...]) -> dict[str, np.ndarray]:
    if impl == "pallas":
        backends.get("jax")  # float64 on
        return _all_outputs(impl, cases)
    path = tmp_path_factory.mktemp("triton") / "out.npz"
    env = os.environ | {"TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    code = f"from tests.backends.test_sinkhorn_kernels import _triton_worker; _triton_worker({str(path)!r}, {cases!r})"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    with np.load(path) as z:
        return dict(z)


@pytest.fixture(scope="module")
def kernels(tmp_path_factory):
    """``get(impl, which, case)``: outputs holding ``case`` (which: 0 primitive, 1 attention, 2 long, 3 public).

    The default suite's cases of an impl run together, once, in the first test that asks for one (an
    interpreter run each); any other case runs alone, in its own (slow) test.
    """
    cache: dict[str, dict[str, np.ndarray]] = {}

    def get(impl: str, which: int, case: tuple) -> dict[str, np.ndarray]:
        if case not in FAST[impl][which]:
            return _outputs(impl, tmp_path_factory, tuple([case] if i == which else [] for i in range(4)))
        if impl not in cache:
            cache[impl] = _outputs(impl, tmp_path_factory, FAST[impl])
        return cache[impl]

    return get


# ---------------------------------------------------------------- the checks


def _close(actual, expected, dtype):
    if dtype == "float64":
        assert_close(actual, expected)
    else:  # float32: relative to the largest entry, as sums of exponentials cancel
        assert_close(actual, expected, dtype, atol=1e-5 * max(1.0, float(np.abs(expected).max())))


@pytest.mark.parametrize("n_iter", [1, 3, 21])
@pytest.mark.parametrize("masked", [False, True])
def test_the_dense_oracle_of_the_recursion_matches_autograd_through_the_naive_attention(n_iter, masked):
    """The driver's recursion on dense float64 passes gives autograd's gradients: the steps oracle is sound."""
    inp = _inputs(7, masked, seed=2)
    args = [inp[n] for n in ("q", "k", "v", "dout")]
    for a, b in zip(ref_attention(*args, n_iter, inp["mask"])[0], _naive_autograd(*args, n_iter, inp["mask"])):
        assert_close(a, b)


def _params(which: int, cases: list) -> list:
    """(impl, case) pairs, marked slow where the default suite leaves the case out for that impl."""
    return [
        pytest.param(impl, c, marks=() if c in FAST[impl][which] else pytest.mark.slow, id=f"{impl}-{c}")
        for impl in FAST
        for c in cases
    ]


@pytest.mark.parametrize(("impl", "case"), _params(0, PRIM_CASES))
def test_each_primitive_matches_the_dense_float64_reference(kernels, impl, case):
    t, masked, dtype = case
    inp = _inputs(t, masked)
    q, k, mask = inp["q"], inp["k"], inp["mask"]
    dq, dk = ref_attention(q, k, inp["v"], inp["dout"], 3, mask)[0][1:3]
    expected = {
        "row_lse": ref_row_lse(q, k, inp["g"], mask),
        "col_lse": ref_col_lse(q, k, inp["f"], mask),
        "apply": ref_apply(q, k, inp["f"], inp["g"], inp["x"], mask),
        "apply_t": ref_apply(q, k, inp["f"], inp["g"], inp["x"], mask, True),
        "dq": dq,
        "dk": dk,
    }
    got = kernels(impl, 0, case)
    for name, want in expected.items():
        a = got[f"prim{case}/{name}"]
        assert a.dtype == np.dtype(dtype), name
        _close(a, want, dtype)


@pytest.mark.parametrize(("impl", "case"), _params(1, ATTN_CASES) + _params(2, LONG_CASES))
def test_attention_from_the_kernels_matches_the_naive_outputs_and_gradients(kernels, impl, case):
    t, masked, n_iter, *_ = case
    inp = _inputs(t, masked, seed=1)
    want = _naive_autograd(*(inp[n] for n in ("q", "k", "v", "dout")), n_iter, inp["mask"])
    got = kernels(impl, 1 if len(case) == 3 else 2, case)
    key = case if len(case) == 4 else (*case, BLOCK)
    for name, w in zip(("out", "dq", "dk", "dv"), want, strict=True):
        assert_close(got[f"attn{key}/{name}"], w)


@pytest.mark.parametrize("impl", ["triton", "pallas"])
def test_attention_with_the_kernel_impl_matches_the_naive_outputs_and_gradients(kernels, impl):
    inp = _inputs(*PUBLIC_CASE[:2], seed=1)
    want = _naive_autograd(*(inp[n] for n in ("q", "k", "v", "dout")), PUBLIC_CASE[2], inp["mask"])
    for name, w in zip(("out", "dq", "dk", "dv"), want, strict=True):
        assert_close(kernels(impl, 3, PUBLIC_CASE)[f"public{PUBLIC_CASE}/{name}"], w)


@pytest.mark.parametrize("impl", ["triton", "pallas"])
@pytest.mark.parametrize("block", [8, 24, 0, True])
def test_a_block_that_is_not_a_power_of_two_of_at_least_16_is_refused(impl, block):
    if impl == "triton":  # refused before any launch, so no interpreter is needed
        import torch

        from backends.torch import sinkhorn_triton as mod

        z = torch.zeros((1, 1, 4, 8))
    else:
        import jax.numpy as jnp

        from backends.jax import sinkhorn_pallas as mod

        z = jnp.zeros((1, 1, 4, 8))
    for call in (mod.row_lse, mod.col_lse):
        with pytest.raises(ValueError, match=r"^block=.*power of two >= 16"):
            call(z, z, z[..., 0], block=block)
