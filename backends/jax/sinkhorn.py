"""Log-domain Sinkhorn normalisation and the attention that uses it (Sinkformers), in JAX.

One iteration is one normalisation: iteration 0 normalises rows, 1 columns, 2 rows, ... (eq. 5.3),
so ``n_iter = 1`` is the softmax and an odd ``n_iter`` ends on rows. The scalings are kept in the
log domain (appendix 5.B, eq. 5.13) with marginals scaled so that rows sum to 1 and, for a square
matrix, columns sum to 1 (eq. 5.13 writes 1/n). ``attention(..., impl=...)`` chooses how: ``naive``
forms the T x T plan; the O(T)-memory impls run ``backends/sinkhorn_blocked.py``'s recursion over tiles.
Mirrors ``backends/torch/sinkhorn.py``.
"""

from __future__ import annotations

import functools
import importlib
import math

import jax
import jax.numpy as jnp

from .. import sinkhorn_blocked as driver
from ..sinkhorn_blocked import Primitives
from ..sinkhorn_common import check_attention, check_sinkhorn
from . import sinkhorn_blocked

IMPLS = ("naive", "blocked", "pallas", "auto")
"""``attention``'s impls in JAX (``backends/sinkhorn_common.py`` says what each is)."""


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
    """Gradient w.r.t. the scores of a converged plan by the implicit function theorem.

    With P = diag(e^f) e^C diag(e^g) and the marginals a = P 1, b = P^T 1 fixed, the adjoint
    (u, v) solves [[diag(a), P], [P^T, diag(b)]] (u, v) = ((G*P) 1, (G*P)^T 1) and the gradient
    is P * (G - u 1^T - 1 v^T). The system is singular along (1, -1); the column block is solved
    with 1 1^T / m added, which fixes that direction without changing u_i + v_j.
    """
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
    """Sinkhorn's algorithm on ``exp(scores)`` in the log domain: ``n_iter`` row/column normalisations.

    Args:
        scores: (..., n, m) float, the cost C (attention logits).
        n_iter: number of normalisations, >= 1; 1 is the softmax over the last axis, odd ends on rows.
        mask: (..., n) bool padding mask, True for real tokens, broadcastable against
            ``scores.shape[:-1]`` (square scores only). Masked queries and keys take no part in
            either normalisation; every masked row and column of the output is 0.
        implicit: differentiate the converged fixed point (implicit function theorem) instead of
            back-propagating through every iteration; exact only at convergence.

    Returns:
        (..., n, m) the plan K^l: rows sum to 1; at convergence columns sum to n / m (1 when square).

    References:
        Thesis chapter 5, eq. 5.3 (iterations), appendix 5.B eq. 5.13 (log domain), section 5.3
        (implicit differentiation), Prop. 5.1 (invariance to f_i + g_j).
    """
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
    if q.shape[-2] != k.shape[-2]:
        raise ValueError(f"impl='pallas': needs self-attention (Tq = Tk), got {q.shape[-2]} and {k.shape[-2]}")
    try:
        module = importlib.import_module(".sinkhorn_pallas", __package__)
    except ImportError as err:
        raise ValueError(f"impl='pallas': unavailable here ({err}); allowed {', '.join(IMPLS)}") from None
    return driver.kernel_primitives("pallas", module)


def _resolve(impl: str, implicit: bool, q: jax.Array, k: jax.Array) -> Primitives | None:
    """The passes ``impl`` runs on (None: the naive impl)."""
    if impl == "auto":
        if implicit:
            return None
        on_gpu = jax.default_backend() in ("gpu", "cuda", "rocm", "tpu")
        if on_gpu and q.shape[-2] == k.shape[-2]:
            try:
                return _kernel(q, k)
            except ValueError:  # the kernel module cannot load here: the pure-framework passes
                pass
        return sinkhorn_blocked.primitives()
    if impl != "naive" and implicit:
        raise ValueError(f"implicit=True: only impl='naive' or 'auto' differentiate the fixed point, got impl={impl!r}")
    if impl == "naive":
        return None
    return _kernel(q, k) if impl == "pallas" else sinkhorn_blocked.primitives()


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
    """Scaled dot-product attention normalised by the softmax or by Sinkhorn's algorithm.

    Args:
        q, k, v: (B, H, T, d) float, one dtype (k and v may have their own T; v its own d).
        normalization: ``softmax`` (row-stochastic) or ``sinkhorn`` (doubly stochastic in the limit).
        sinkhorn_iters: normalisations for ``sinkhorn`` (ignored by ``softmax``).
        mask: (B, 1 or H, T) bool padding mask, True for real tokens.
        implicit: implicit differentiation of Sinkhorn (see ``sinkhorn``); naive impl only.
        impl: ``naive`` materialises the T x T plan; ``blocked`` (pure JAX) and ``pallas`` (fused kernels,
            interpreted on the CPU) recompute it tile by tile in O(T) memory, same output and gradients;
            ``auto``: pallas on a GPU or TPU, else blocked (naive when ``implicit``).

    Returns:
        out (B, H, T, d) and the attention matrices (B, H, T, T); None for the blocked impls, which never
        form them.

    References:
        Thesis chapter 5, eq. 5.1 (Transformer) and eq. 5.4 (Sinkformer).
    """
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
