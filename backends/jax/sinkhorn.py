"""Log-domain Sinkhorn and Sinkhorn attention (Sinkformers) in JAX: ``backends.sinkhorn.Sinkhorn`` and ``Attention``.

The maths and the impls are described once in ``backends/sinkhorn.py``.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from backends.sinkhorn import check_attention, check_sinkhorn, load_kernel, resolve_impl

from .. import sinkhorn_blocked as driver
from ..sinkhorn_blocked import Primitives
from . import sinkhorn_blocked

IMPLS = ("naive", "blocked", "pallas", "auto")
"""``attention``'s impls in JAX (``backends/sinkhorn.py`` says what each is)."""


def _concrete(*xs: jax.Array) -> bool:
    """Whether the values are known (not traced), so that a NaN can be reported before running."""
    return not any(isinstance(x, jax.core.Tracer) for x in xs)


def _iterate(scores: jax.Array, n_iter: int, mask: jax.Array | None) -> jax.Array:
    """The transport plan after ``n_iter`` alternating log-domain normalisations (differentiable)."""
    n, m = scores.shape[-2:]
    zero = jnp.zeros((), scores.dtype)
    if mask is None:
        cost, log_col = scores, jnp.asarray(math.log(n / m), scores.dtype)
        rows = cols = pair = None
    else:
        rows, cols = jnp.expand_dims(mask, -1), jnp.expand_dims(mask, -2)
        pair = jnp.logical_and(rows, cols)
        # A finite fill (not -inf) keeps the log-sum-exp of an all-masked row finite, so its
        # gradient is 0, not NaN; exp() of it underflows to exactly 0 in the valid rows.
        cost = jnp.where(pair, scores, jnp.asarray(jnp.finfo(scores.dtype).min / 4, scores.dtype))
        log_col = zero

    def row(g: jax.Array) -> jax.Array:
        f = -jax.nn.logsumexp(cost + g, axis=-1, keepdims=True)
        return f if rows is None else jnp.where(rows, f, zero)

    def col(f: jax.Array) -> jax.Array:
        g = log_col - jax.nn.logsumexp(cost + f, axis=-2, keepdims=True)
        return g if cols is None else jnp.where(cols, g, zero)

    def pair_step(_: int, fg: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        f = row(fg[1])
        return f, col(f)

    # One row and one column normalisation per loop step (a scan under reverse mode, so the
    # gradient still goes through every iteration); an odd count ends with one more row.
    f, g = jnp.zeros_like(scores[..., :1]), jnp.zeros_like(scores[..., :1, :])
    f, g = jax.lax.fori_loop(0, n_iter // 2, pair_step, (f, g))
    if n_iter % 2:
        f = row(g)
    plan = jnp.exp(cost + f + g)
    return plan if pair is None else jnp.where(pair, plan, zero)


def _implicit_grad(plan: jax.Array, grad: jax.Array, mask: jax.Array | None) -> jax.Array:
    """The implicit-function-theorem gradient w.r.t. the scores (``backends/sinkhorn.py``)."""
    one = jnp.ones((), plan.dtype)
    gp = grad * plan
    x, y = gp.sum(-1), gp.sum(-2)
    a, b = plan.sum(-1), plan.sum(-2)
    if mask is None:
        cols = jnp.ones_like(b)
    else:
        cols = jnp.broadcast_to(mask, b.shape).astype(plan.dtype)
        a = jnp.where(jnp.broadcast_to(mask, a.shape), a, one)
        b = jnp.where(jnp.broadcast_to(mask, b.shape), b, one)
    scaled = plan / jnp.expand_dims(a, -1)
    eye = jnp.broadcast_to(jnp.eye(b.shape[-1], dtype=plan.dtype), (*b.shape, b.shape[-1]))
    schur = jnp.expand_dims(b, -1) * eye - jnp.swapaxes(plan, -1, -2) @ scaled
    count = jnp.maximum(cols.sum(-1, keepdims=True), one)
    schur = schur + jnp.expand_dims(cols, -1) * jnp.expand_dims(cols, -2) / jnp.expand_dims(count, -1)
    rhs = y - (jnp.swapaxes(scaled, -1, -2) @ jnp.expand_dims(x, -1))[..., 0]
    v = jnp.linalg.solve(schur, jnp.expand_dims(rhs, -1))[..., 0]
    u = (x - (plan @ jnp.expand_dims(v, -1))[..., 0]) / a
    return plan * (grad - jnp.expand_dims(u, -1) - jnp.expand_dims(v, -2))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _implicit(scores: jax.Array, n_iter: int, mask: jax.Array | None) -> jax.Array:
    return _iterate(scores, n_iter, mask)


def _implicit_fwd(scores, n_iter, mask):
    plan = _iterate(jax.lax.stop_gradient(scores), n_iter, mask)
    return plan, (plan, mask)


def _implicit_bwd(n_iter, residuals, grad):
    plan, mask = residuals
    return _implicit_grad(plan, grad, mask), None


_implicit.defvjp(_implicit_fwd, _implicit_bwd)


@functools.partial(jax.jit, static_argnames=("n_iter", "implicit"))
def _sinkhorn(scores: jax.Array, n_iter: int, mask: jax.Array | None, implicit: bool) -> jax.Array:
    if implicit:
        return _implicit(scores, n_iter, mask)
    return _iterate(scores, n_iter, mask)


def sinkhorn(scores: jax.Array, n_iter: int, mask: jax.Array | None = None, implicit: bool = False) -> jax.Array:
    """``backends.sinkhorn.Sinkhorn`` in JAX."""
    check_sinkhorn(
        tuple(scores.shape),
        scores.dtype,
        jnp.issubdtype(scores.dtype, jnp.floating),
        n_iter,
        None if mask is None else tuple(mask.shape),
        None if mask is None else mask.dtype,
        mask is None or mask.dtype == jnp.bool_,
        finite=(lambda: bool(jnp.isfinite(scores).all())) if _concrete(scores) else None,
    )
    return _sinkhorn(scores, n_iter, mask, bool(implicit))


def _kernel(q: jax.Array, k: jax.Array) -> Primitives:
    """The Pallas passes of ``backends/jax/sinkhorn_pallas.py`` (interpreted on the CPU), imported on first use."""
    module = load_kernel("pallas", __package__, q.shape[-2], k.shape[-2], IMPLS)
    return driver.kernel_primitives("pallas", module)


def _resolve(impl: str, implicit: bool, q: jax.Array, k: jax.Array) -> Primitives | None:
    """The passes ``impl`` runs on (None: the naive impl); ``backends.sinkhorn.resolve_impl`` decides."""
    return resolve_impl(
        impl,
        implicit,
        "pallas",
        jax.default_backend() in ("gpu", "cuda", "rocm", "tpu"),
        q.shape[-2] == k.shape[-2],
        lambda: _kernel(q, k),
        sinkhorn_blocked.primitives,
    )


@functools.partial(jax.jit, static_argnames=("softmax", "n_iter", "implicit"))
def _naive(q, k, v, softmax: bool, n_iter: int, mask, implicit: bool) -> tuple[jax.Array, jax.Array]:
    scale = jnp.asarray(q.shape[-1] ** -0.5, q.dtype)
    scores = (q @ jnp.swapaxes(k, -1, -2)) * scale
    if softmax and mask is None:
        weights = jax.nn.softmax(scores, axis=-1)
    else:
        weights = _implicit(scores, n_iter, mask) if implicit else _iterate(scores, n_iter, mask)
    return weights @ v, weights


def attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    normalization: str = "softmax",
    sinkhorn_iters: int = 3,
    mask: jax.Array | None = None,
    implicit: bool = False,
    impl: str = "naive",
) -> tuple[jax.Array, jax.Array | None]:
    """``backends.sinkhorn.Attention`` in JAX; ``auto``: pallas on a GPU or TPU, else blocked."""
    n_iter = check_attention(
        (tuple(q.shape), tuple(k.shape), tuple(v.shape)),
        (q.dtype, k.dtype, v.dtype),
        jnp.issubdtype(q.dtype, jnp.floating),
        normalization,
        sinkhorn_iters,
        None if mask is None else tuple(mask.shape),
        None if mask is None else mask.dtype,
        mask is None or mask.dtype == jnp.bool_,
        impl,
        IMPLS,
        finite=(lambda: bool(jnp.isfinite(q).all() & jnp.isfinite(k).all() & jnp.isfinite(v).all()))
        if normalization == "sinkhorn" and _concrete(q, k, v)
        else None,
    )
    implicit = bool(implicit) and normalization == "sinkhorn"
    prims = _resolve(impl, implicit, q, k)
    if prims is not None:
        return sinkhorn_blocked.blocked_attention(q, k, v, n_iter, mask, prims), None
    return _naive(q, k, v, normalization == "softmax", n_iter, mask, implicit)


@jax.jit
def fused_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """Fused softmax attention (``jax.nn.dot_product_attention``), the baseline to beat.

    Args:
        q, k, v: (B, H, T, d) float.

    Returns:
        (B, H, T, d) ``softmax(q k^T / sqrt(d)) v``; XLA picks the implementation (cuDNN on GPUs).
    """

    def to_bthd(x: jax.Array) -> jax.Array:
        return jnp.swapaxes(x, 1, 2)

    # jax.nn.dot_product_attention promotes its logits with float32 internally, which strict dtype
    # promotion rejects for float64 inputs; the inputs here share one dtype, so standard is safe.
    with jax.numpy_dtype_promotion("standard"):
        out = jax.nn.dot_product_attention(to_bthd(q), to_bthd(k), to_bthd(v))
    return jnp.swapaxes(out, 1, 2)
