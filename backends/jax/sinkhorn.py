"""Log-domain Sinkhorn normalisation and the attention that uses it (Sinkformers), in JAX.

One iteration is one normalisation: iteration 0 normalises rows, 1 columns, 2 rows, ... (eq. 5.3),
so ``n_iter = 1`` is the softmax and an odd ``n_iter`` ends on rows. The scalings are kept in the
log domain (appendix 5.B, eq. 5.13) with marginals scaled so that rows sum to 1 and, for a square
matrix, columns sum to 1 (eq. 5.13 writes 1/n). Mirrors ``backends/torch/sinkhorn.py``.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

NORMALIZATIONS = ("softmax", "sinkhorn")


def _validate(scores: jax.Array, n_iter: int, mask: jax.Array | None) -> None:
    if scores.ndim < 2:
        raise ValueError(f"scores: expected (..., n, m), got shape {tuple(scores.shape)}")
    if not isinstance(n_iter, int) or isinstance(n_iter, bool) or n_iter < 1:
        raise ValueError(f"n_iter={n_iter!r}: expected an integer >= 1 (1 is the softmax)")
    if mask is None:
        return
    n, m = scores.shape[-2:]
    if mask.dtype != jnp.bool_:
        raise ValueError(f"mask: expected a bool padding mask (True = real token), got dtype {mask.dtype}")
    if n != m:
        raise ValueError(f"mask: padding masks need square scores (self-attention), got n={n}, m={m}")
    if mask.ndim != scores.ndim - 1 or mask.shape[-1] != n:
        raise ValueError(
            f"mask: expected shape (..., {n}) with {scores.ndim - 1} dims, broadcastable "
            f"against scores {tuple(scores.shape[:-1])}; got {tuple(mask.shape)}"
        )


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
    _validate(scores, n_iter, mask)
    if implicit:
        return _implicit(scores, n_iter, mask)
    return _iterate(scores, n_iter, mask)


@functools.partial(jax.jit, static_argnames=("normalization", "sinkhorn_iters", "implicit"))
def attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    normalization: str = "softmax",
    sinkhorn_iters: int = 3,
    mask: jax.Array | None = None,
    implicit: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """Scaled dot-product attention normalised by the softmax or by Sinkhorn's algorithm.

    Args:
        q, k, v: (B, H, T, d) float.
        normalization: ``softmax`` (row-stochastic) or ``sinkhorn`` (doubly stochastic in the limit).
        sinkhorn_iters: normalisations for ``sinkhorn`` (ignored by ``softmax``).
        mask: (B, 1 or H, T) bool padding mask, True for real tokens.
        implicit: implicit differentiation of Sinkhorn (see ``sinkhorn``).

    Returns:
        out (B, H, T, d) and the attention matrices (B, H, T, T).

    References:
        Thesis chapter 5, eq. 5.1 (Transformer) and eq. 5.4 (Sinkformer).
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization={normalization!r}: allowed {', '.join(NORMALIZATIONS)}")
    scale = jnp.asarray(q.shape[-1] ** -0.5, q.dtype)
    scores = (q @ jnp.swapaxes(k, -1, -2)) * scale
    if normalization == "softmax" and mask is None:
        weights = jax.nn.softmax(scores, axis=-1)
    else:
        n_iter = 1 if normalization == "softmax" else sinkhorn_iters
        weights = sinkhorn(scores, n_iter, mask, implicit=implicit and normalization == "sinkhorn")
    return weights @ v, weights


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
