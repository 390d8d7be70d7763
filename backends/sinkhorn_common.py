"""Framework-neutral argument checks of Sinkhorn and Sinkhorn attention, shared by every backend and impl.

Both ``backends/torch/sinkhorn.py`` and ``backends/jax/sinkhorn.py`` (naive, blocked and kernel impls alike)
call these with plain shapes and flags, so a bad call gets the same one-line ``ValueError`` everywhere.
"""

from __future__ import annotations

from collections.abc import Callable

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


__all__ = ["IMPLS", "NORMALIZATIONS", "check_attention", "check_sinkhorn"]
