"""O(T)-memory Sinkhorn attention: the primitive interface and the forward/backward recursion, framework-neutral.

Nothing T x T is stored: every pass walks (query, key) tiles and recomputes the tile of S = s q k^T
(s = d^-1/2). Four primitives do the passes (pure torch / pure JAX loops over key blocks in
``backends/{torch,jax}/sinkhorn_blocked.py``, fused Triton / Pallas kernels in ``sinkhorn_triton.py`` /
``sinkhorn_pallas.py``); the recursion below is written once over them and an array namespace (``torch``
or ``jax.numpy``: only ``where``, ``stack`` and ``zeros_like`` are used), and each framework wraps it in its
custom backward (``torch.autograd.Function``, ``jax.custom_vjp``).

Shapes: q, k (B, H, T, d); potentials f (over queries) and g (over keys) (B, H, T); the padding mask
(B, 1 or H, T), True = real token. Off valid pairs every E below is exactly 0, and f, g are 0 on padded
entries, as in the naive ``_iterate``.

Forward (n_iter log-sum-exp passes and one apply): f = g = 0; step t even: f = -row_lse(g); odd:
g = log_col - col_lse(f); out = apply(f_N, g_N, v).

Backward of the unrolled iterations (n_iter + 1 apply passes and one grad pass), with (a_t, b_t) the
potentials after step t and E_t = exp(S + a_t + b_t): dv = E_{N-1}^T dout; df = sum(dout * out, -1),
dg = sum(v * dv, -1); for t = N-1 .. 0, a row step takes w_t = df, dg -= E_t^T w_t, df = 0; a column step
takes w_t = dg, df -= E_t w_t, dg = 0; then dC = E_{N-1} o (dout v^T) - sum_t [t even] w_t,i E_t,ij
- sum_t [t odd] E_t,ij w_t,j and dq = s dC k, dk = s dC^T q (``grad_qk``). f_0 = g_0 = 0 are constants, so
the leftover df, dg are dropped. Memory: O(T (d + n_iter)) per head.

Each backend's ``blocked_attention(q, k, v, n_iter, mask=None, prims=None)`` is this recursion behind the
framework's custom backward: Sinkhorn attention ``P v`` in O(T) memory, P after ``n_iter`` normalisations,
never materialised; arguments are not checked there (``sinkhorn.attention`` does it). q, k: (B, H, Tq|Tk, d)
float; v: (B, H, Tk, e); n_iter >= 1 (1 is the softmax); mask: (B, 1 or H, T) bool, True = real token
(Tq = Tk); prims: the passes (default: the framework's pure ones, ``DEFAULT_BLOCK`` keys per tile). It
returns (B, H, Tq, e), equal to the naive ``attention``'s output, differentiable in q, k, v (thesis
chapter 5, eq. 5.4; appendix 5.B).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

Array = Any

DEFAULT_BLOCK = 64
"""Keys per tile: a (B, H, Tq, 64) float32 tile is 256 B per query and head. On this 2-core CPU 64 was the
fastest of 64, 128, 256, 512 at T = 2,048 (benchmarks/sinkhorn_attention.py), and memory is O(T * block)."""
"""A torch.Tensor or a jax.Array."""


class Steps(NamedTuple):
    """What the gradient pass needs of every iteration t = 0 .. N-1 (row steps are the even t).

    Each field is (N, B, H, T): a, b the query and key potentials after step t (E_t = exp(S + a_t + b_t) on
    valid pairs), w the adjoint of the potential step t set (over queries for a row step, keys for a column
    step), 0 on padded entries.
    """

    a: Array
    b: Array
    w: Array


class RowLse(Protocol):
    """Row log-sum-exps r_i = LSE_j(s q_i . k_j + g_j) over valid keys, one pass over key tiles.

    Args:
        q: (B, H, Tq, d), k: (B, H, Tk, d) float32 or float64, one device and dtype (the fused kernels need
            Tq = Tk).
        g: (B, H, Tk) column potentials.
        mask: (B, 1 | H, T) bool padding mask, True = real token, or None.

    Returns:
        (B, H, Tq) r; any finite value on padded rows (the driver sets f to 0 there; the kernels give 0).
    """

    def __call__(self, q: Array, k: Array, g: Array, mask: Array | None) -> Array: ...


class ColLse(Protocol):
    """Column log-sum-exps c_j = LSE_i(s q_i . k_j + f_i) over valid queries (``RowLse`` of the transpose).

    Args:
        q: (B, H, Tq, d), k: (B, H, Tk, d) float32 or float64.
        f: (B, H, Tq) row potentials.
        mask: (B, 1 | H, T) bool padding mask or None.

    Returns:
        (B, H, Tk) c; any finite value on padded columns (the kernels give 0).
    """

    def __call__(self, q: Array, k: Array, f: Array, mask: Array | None) -> Array: ...


class Apply(Protocol):
    """y = E x, or E^T x with ``transpose``, for E_ij = exp(s q_i . k_j + a_i + b_j) on valid pairs (0 elsewhere).

    Args:
        q: (B, H, Tq, d), k: (B, H, Tk, d) float32 or float64.
        a: (B, H, Tq) row and b: (B, H, Tk) column potentials.
        x: the vectors E multiplies, (B, H, Tk, e); or E^T, (B, H, Tq, e).
        mask: (B, 1 | H, T) bool padding mask or None.
        transpose: multiply by E^T (a pass over query tiles for each key block).

    Returns:
        y: (B, H, Tq, e), or (B, H, Tk, e) with ``transpose``.
    """

    def __call__(
        self, q: Array, k: Array, a: Array, b: Array, x: Array, mask: Array | None, transpose: bool
    ) -> Array: ...


class GradQk(Protocol):
    """Gradients of the Sinkhorn attention output w.r.t. q and k, recomputing dC tile by tile.

    dC_ij = P_ij (dout_i . v_j) - sum_{row steps t} w_t,i E_t,ij - sum_{column steps t} E_t,ij w_t,j, with
    E_t = exp(S + a_t + b_t) and P = E_{N-1}; step t normalises rows when t is even, columns when odd
    (the backward in the module docstring).

    Args:
        q: (B, H, Tq, d), k: (B, H, Tk, d) float32 or float64; v: (B, H, Tk, e), dout: (B, H, Tq, e).
        steps: ``Steps(a, b, w)``, each (N, B, H, T): per iteration the potentials after it and its adjoint.
        mask: (B, 1 | H, T) bool padding mask or None.

    Returns:
        dq (B, H, Tq, d), dk (B, H, Tk, d): s sum_j dC_ij k_j and s sum_i dC_ij q_i.
    """

    def __call__(
        self, q: Array, k: Array, v: Array, dout: Array, steps: Steps, mask: Array | None
    ) -> tuple[Array, Array]: ...


@dataclasses.dataclass(frozen=True)
class Primitives:
    """The four passes an impl provides; the driver runs unchanged on any bundle of them."""

    name: str
    row_lse: RowLse
    col_lse: ColLse
    apply: Apply
    grad_qk: GradQk


def forward(
    prims: Primitives, xp: Any, q: Array, k: Array, n_iter: int, mask: Array | None, log_col: float
) -> tuple[list[Array], list[Array]]:
    """The potentials (a_t, b_t) after each of the ``n_iter`` log-domain normalisations.

    Args:
        prims: the passes. xp: ``torch`` or ``jax.numpy``. q, k: (B, H, T, d). n_iter: >= 1.
        mask: (B, 1 or H, T) bool or None. log_col: log(Tq / Tk) without a mask, else 0.

    Returns:
        Two lists of n_iter (B, H, T) arrays; the last pair are the final f, g.

    References:
        Thesis chapter 5, eq. 5.3; appendix 5.B, eq. 5.13.
    """
    f, g = xp.zeros_like(q[..., 0]), xp.zeros_like(k[..., 0])
    a, b = [], []
    for t in range(n_iter):
        if t % 2 == 0:
            f = -prims.row_lse(q, k, g, mask)
            f = f if mask is None else xp.where(mask, f, 0.0)
        else:
            g = log_col - prims.col_lse(q, k, f, mask)
            g = g if mask is None else xp.where(mask, g, 0.0)
        a.append(f)
        b.append(g)
    return a, b


def backward(
    prims: Primitives,
    xp: Any,
    q: Array,
    k: Array,
    v: Array,
    out: Array,
    dout: Array,
    a: Array,
    b: Array,
    mask: Array | None,
) -> tuple[Array, Array, Array]:
    """(dq, dk, dv) of ``out = apply(a[-1], b[-1], v)`` through every iteration, by the recursion above.

    Args:
        prims, xp: as in ``forward``. q, k, v, out, dout: (B, H, T, d|e). a, b: the potentials of
            ``forward``, as lists or stacked (N, B, H, T). mask: as in ``forward``.

    Returns:
        dq, dk, dv shaped as q, k, v.
    """
    n = len(a)
    dv = prims.apply(q, k, a[n - 1], b[n - 1], dout, mask, True)
    df, dg = (dout * out).sum(-1), (v * dv).sum(-1)
    w: list[Array] = [None] * n
    for t in reversed(range(n)):
        if t % 2 == 0:
            w[t] = df if mask is None else xp.where(mask, df, 0.0)
            dg = dg - prims.apply(q, k, a[t], b[t], w[t][..., None], mask, True)[..., 0]
            df = xp.zeros_like(df)
        else:
            w[t] = dg if mask is None else xp.where(mask, dg, 0.0)
            df = df - prims.apply(q, k, a[t], b[t], w[t][..., None], mask, False)[..., 0]
            dg = xp.zeros_like(dg)
    steps = Steps(xp.stack(list(a)), xp.stack(list(b)), xp.stack(w))
    dq, dk = prims.grad_qk(q, k, v, dout, steps, mask)
    return dq, dk, dv


def blocked_primitives(
    row_lse: Callable,
    col_lse: Callable,
    apply: Callable,
    grad_qk: Callable,
    block: int,
    name: str = "blocked",
    **options: Any,
) -> Primitives:
    """An impl's four passes (each taking ``block=`` and ``options`` by keyword) bundled with ``block`` per tile.

    Raises:
        ValueError: ``block`` is not an integer >= 1.
    """
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        raise ValueError(f"block={block!r}: expected an integer >= 1 (keys per tile)")
    return Primitives(
        name=name,
        row_lse=functools.partial(row_lse, block=block, **options),
        col_lse=functools.partial(col_lse, block=block, **options),
        apply=functools.partial(apply, block=block, **options),
        grad_qk=functools.partial(grad_qk, block=block, **options),
    )


def check_kernel_block(block: object) -> None:
    """Check a fused kernel's tile size: a power of two >= 16 (GPU dot products need 16 x 16 tiles at least)."""
    if not isinstance(block, int) or isinstance(block, bool) or block < 16 or block & (block - 1):
        raise ValueError(f"block={block!r}: expected a power of two >= 16 (GPU dot products need 16 x 16 tiles)")


@functools.cache
def kernel_primitives(name: str, module: Any) -> Primitives:
    """A kernel module's passes as a bundle: its ``primitives()``, or its ``PRIMITIVES``, either a bundle or a
    tuple (row_lse, col_lse, apply, grad_qk) whose ``grad_qk`` takes the steps as a sequence of (a_t, b_t, w_t).
    """
    factory: Callable[[], Primitives] | None = getattr(module, "primitives", None)
    if callable(factory):
        return factory()
    bundle = module.PRIMITIVES
    if isinstance(bundle, Primitives):
        return bundle
    row, col, app, grad = bundle

    def grad_qk(q: Array, k: Array, v: Array, dout: Array, steps: Steps, mask: Array | None) -> tuple[Array, Array]:
        return grad(q, k, v, dout, list(zip(steps.a, steps.b, steps.w)), mask)

    return Primitives(name=name, row_lse=row, col_lse=col, apply=app, grad_qk=grad_qk)


__all__ = [
    "DEFAULT_BLOCK",
    "Apply",
    "ColLse",
    "GradQk",
    "Primitives",
    "RowLse",
    "Steps",
    "backward",
    "blocked_primitives",
    "check_kernel_block",
    "forward",
    "kernel_primitives",
]
