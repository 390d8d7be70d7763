"""Framework-neutral part of Sinkhorn and Sinkhorn attention: the maths, the argument checks, the impl choice.

One iteration is one normalisation: iteration 0 normalises rows, 1 columns, 2 rows, ... (eq. 5.3),
so ``n_iter = 1`` is the softmax and an odd ``n_iter`` ends on rows. The scalings are kept in the
log domain (appendix 5.B, eq. 5.13) with marginals scaled so that rows sum to 1 and, for a square
matrix, columns sum to 1 (eq. 5.13 writes 1/n). ``attention(..., impl=...)`` chooses how: ``naive``
forms the T x T plan; the O(T)-memory impls run ``backends/sinkhorn_blocked.py``'s recursion over tiles.

Implicit differentiation (section 5.3): with P = diag(e^f) e^C diag(e^g) and the marginals a = P 1,
b = P^T 1 fixed, the adjoint (u, v) solves [[diag(a), P], [P^T, diag(b)]] (u, v) = ((G*P) 1, (G*P)^T 1)
and the gradient w.r.t. the scores is P * (G - u 1^T - 1 v^T). The system is singular along (1, -1);
the column block is solved with 1 1^T / m added, which fixes that direction without changing u_i + v_j.

Both ``backends/torch/sinkhorn.py`` and ``backends/jax/sinkhorn.py`` (naive, blocked and kernel impls alike)
call the checks below with plain shapes and flags, so a bad call gets the same one-line ``ValueError``
everywhere, and pick their passes with ``resolve_impl``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Protocol, TypeVar

from core.backend import Array

P = TypeVar("P")

NORMALIZATIONS = ("softmax", "sinkhorn")
"""Row-stochastic softmax, or Sinkhorn's alternating normalisation (doubly stochastic in the limit)."""

IMPLS = ("naive", "blocked", "triton", "pallas", "auto")
"""How Sinkhorn attention is computed: ``naive`` materialises the T x T plan (and returns it); ``blocked``
recomputes it tile by tile in O(T) memory (pure framework code); ``triton`` (torch) and ``pallas`` (JAX) are
the fused kernels of the same tiles; ``auto`` picks the fastest O(T)-memory impl the device has."""

_NOT_FINITE = "contains NaN or +-inf; Sinkhorn is defined for finite inputs only"


def check_sinkhorn(
    shape: tuple[int, ...],
    dtype: object,
    floating: bool,
    n_iter: object,
    mask_shape: tuple[int, ...] | None = None,
    mask_dtype: object = None,
    mask_is_bool: bool = True,
    finite: Callable[[], bool] | None = None,
    name: str = "scores",
) -> None:
    """Raise a one-line ``ValueError`` naming the bad argument of ``sinkhorn(scores, n_iter, mask)``.

    Args:
        shape: shape of the (..., n, m) scores. dtype: their dtype, only printed. floating: whether it is a
            floating dtype. n_iter: the requested number of normalisations.
        mask_shape, mask_dtype, mask_is_bool: the padding mask's shape and dtype (None: no mask).
        finite: called last, when every cheap check passed; False means a NaN or inf value. None skips the
            value check (JAX tracers: their values are unknown while tracing).
        name: the argument named in the messages about ``shape`` (``scores`` or ``q``).
    """
    if len(shape) < 2:
        raise ValueError(f"{name}: expected (..., n, m), got shape {tuple(shape)}")
    if not floating:
        raise ValueError(f"{name}: expected a floating dtype, got {dtype}")
    if not isinstance(n_iter, int) or isinstance(n_iter, bool) or n_iter < 1:
        raise ValueError(f"n_iter={n_iter!r}: expected an integer >= 1 (1 is the softmax)")
    if mask_shape is not None:
        n, m = shape[-2:]
        if not mask_is_bool:
            raise ValueError(f"mask: expected a bool padding mask (True = real token), got dtype {mask_dtype}")
        if n != m:
            raise ValueError(f"mask: padding masks need square scores (self-attention), got n={n}, m={m}")
        if (
            len(mask_shape) != len(shape) - 1
            or mask_shape[-1] != n
            or any(a not in (1, b) for a, b in zip(mask_shape[:-1], shape[:-2]))
        ):
            raise ValueError(
                f"mask: expected shape (..., {n}) with {len(shape) - 1} dims, broadcastable "
                f"against scores {tuple(shape[:-1])}; got {tuple(mask_shape)}"
            )
    if finite is not None and not finite():
        raise ValueError(f"{name} {_NOT_FINITE}")


def check_attention(
    shapes: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]],
    dtypes: tuple[object, object, object],
    floating: bool,
    normalization: object,
    sinkhorn_iters: object,
    mask_shape: tuple[int, ...] | None,
    mask_dtype: object,
    mask_is_bool: bool,
    impl: object,
    impls: tuple[str, ...],
    finite: Callable[[], bool] | None = None,
) -> int:
    """Check ``attention(q, k, v, ...)``'s arguments; return the number of normalisations to run.

    Args:
        shapes, dtypes: of q (B, H, Tq, d), k (B, H, Tk, d), v (B, H, Tk, e). floating: all three are of one
            floating dtype.
        normalization, sinkhorn_iters, impl: as passed; ``impls`` are the impls this backend offers.
        mask_shape, mask_dtype, mask_is_bool: the padding mask (None: no mask).
        finite: called last; False means q, k or v holds a NaN or inf (None: not checked).

    Returns:
        1 for the softmax, else ``sinkhorn_iters``.
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization={normalization!r}: allowed {', '.join(NORMALIZATIONS)}")
    if impl not in impls:
        raise ValueError(f"impl={impl!r}: allowed {', '.join(impls)} in this backend")
    (q, k, v), (qt, kt, vt) = shapes, dtypes
    if len(q) != 4 or len(k) != 4 or len(v) != 4:
        raise ValueError(f"q, k, v: expected (B, H, T, d) each, got shapes {tuple(q)}, {tuple(k)}, {tuple(v)}")
    if q[:2] != k[:2] or k[:3] != v[:3] or q[3] != k[3]:
        raise ValueError(
            f"q, k, v: expected q (B, H, Tq, d), k (B, H, Tk, d), v (B, H, Tk, e); got {tuple(q)}, {tuple(k)}, "
            f"{tuple(v)}"
        )
    if not (qt == kt == vt):
        raise ValueError(f"q, k, v: expected one dtype, got {qt}, {kt}, {vt}")
    n_iter = 1 if normalization == "softmax" else sinkhorn_iters
    check_sinkhorn(
        (*q[:3], k[2]), qt, floating, n_iter, mask_shape, mask_dtype, mask_is_bool, finite=finite, name="q, k, v"
    )
    return n_iter  # type: ignore[return-value]


def resolve_impl(
    impl: str,
    implicit: bool,
    kernel_name: str,
    accelerated: bool,
    self_attention: bool,
    kernel: Callable[[], P],
    blocked: Callable[[], P],
) -> P | None:
    """The passes ``impl`` runs on: the framework's fused kernel, its blocked passes, or None for the naive impl.

    Args:
        impl: as passed to ``attention`` (already checked); ``kernel_name`` is the backend's kernel impl
            (``triton`` or ``pallas``).
        implicit: implicit differentiation asked for (only the naive impl does it).
        accelerated: the device runs the fused kernel natively (``auto`` tries it only then).
        self_attention: Tq = Tk (the fused kernels need it).
        kernel, blocked: build the fused and the pure-framework passes; ``kernel`` raises ``ValueError`` when
            it cannot run here.

    Returns:
        The passes, or None for the naive impl.
    """
    if impl == "auto":
        if implicit:
            return None
        if accelerated and self_attention:
            try:
                return kernel()
            except ValueError:  # the kernel module cannot load here: the pure-framework passes
                pass
        return blocked()
    if impl != "naive" and implicit:
        raise ValueError(f"implicit=True: only impl='naive' or 'auto' differentiate the fixed point, got impl={impl!r}")
    if impl == "naive":
        return None
    return kernel() if impl == kernel_name else blocked()


def load_kernel(name: str, package: str, tq: int, tk: int, impls: tuple[str, ...]) -> object:
    """Import the backend's fused-kernel module ``<package>.sinkhorn_<name>`` on first use.

    Raises:
        ValueError: Tq != Tk (the kernels do self-attention only), or the module cannot be imported here.
    """
    if tq != tk:
        raise ValueError(f"impl={name!r}: needs self-attention (Tq = Tk), got {tq} and {tk}")
    try:
        return importlib.import_module(f".sinkhorn_{name}", package)
    except ImportError as err:
        raise ValueError(f"impl={name!r}: unavailable here ({err}); allowed {', '.join(impls)}") from None


__all__ = ["IMPLS", "NORMALIZATIONS", "OPS", "check_attention", "check_sinkhorn", "load_kernel", "resolve_impl"]


class Sinkhorn(Protocol):
    """Log-domain Sinkhorn: ``n_iter`` alternating row/column normalisations (thesis eq. 5.3, 5.13).

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

    def __call__(self, scores: Array, n_iter: int, mask: Array | None = None, implicit: bool = False) -> Array: ...


class Attention(Protocol):
    """Scaled dot-product attention normalised by the softmax or by Sinkhorn's algorithm.

    Args:
        q, k, v: (B, H, T, d) float, one dtype (k and v may have their own T; v its own d).
        normalization: ``softmax`` (row-stochastic) or ``sinkhorn`` (doubly stochastic in the limit).
        sinkhorn_iters: normalisations for ``sinkhorn`` (ignored by ``softmax``).
        mask: (B, 1 or H, T) bool padding mask, True for real tokens.
        implicit: implicit differentiation of Sinkhorn (see ``Sinkhorn``); naive impl only.
        impl: (``backends/sinkhorn.py``'s ``IMPLS``) ``naive`` forms the T x T weights; ``blocked`` and
            the fused kernels (``triton`` in torch, ``pallas`` in JAX) recompute them tile by tile in O(T)
            memory, same output and gradients; ``auto`` picks the fastest O(T)-memory one for the device
            (naive when ``implicit``).

    Returns:
        out (B, H, T, d) and the attention matrices (B, H, T, T); None for the blocked impls, which never
        form them.

    References:
        Thesis chapter 5, eq. 5.1 (Transformer) and eq. 5.4 (Sinkformer).
    """

    def __call__(
        self,
        q: Array,
        k: Array,
        v: Array,
        normalization: str = "softmax",
        sinkhorn_iters: int = 3,
        mask: Array | None = None,
        implicit: bool = False,
        impl: str = "naive",
    ) -> tuple[Array, Array | None]: ...


class FusedAttention(Protocol):
    """The framework's fused softmax attention on (B, H, T, d) inputs (the speed baseline)."""

    def __call__(self, q: Array, k: Array, v: Array) -> Array: ...


OPS: dict[str, type] = {
    "sinkhorn": Sinkhorn,
    "attention": Attention,
    "fused_attention": FusedAttention,
}
"""Operator name -> its Protocol: ``backends.torch.<family>`` and ``backends.jax.<family>`` export each name."""
