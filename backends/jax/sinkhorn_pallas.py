"""Fused Pallas kernels for O(T)-memory log-domain Sinkhorn attention (the ``pallas`` impl).

The four primitives of the blocked Sinkhorn driver (``row_lse``, ``col_lse``, ``apply``, ``grad_qk``) as
``pl.pallas_call`` kernels, one program per (batch * head, block of T), each recomputing the tile
``s q_i . k_j`` of the scores instead of storing the T x T matrix. As in ``backends/torch/sinkhorn_triton.py``,
three kernels serve all four primitives: a program owns an *outer* block (queries, or keys for the transposed
passes) and loops over the *inner* blocks with ``lax.fori_loop``. T is padded on the host to a multiple of
the block and the tail is masked as padding, so T need not be a multiple of the block.

On the CPU the kernels run in Pallas' interpreter (``interpret=True``, the default there); on a GPU they
lower through Triton. Tiles are multiplied at ``Precision.HIGHEST`` (no TF32 for float32).

References:
    Thesis chapter 5 (Sinkformers), appendix 5.B eq. 5.13 (log-domain iterations); the online log-sum-exp
    over tiles is that of FlashAttention (Dao et al., 2022).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from ..sinkhorn_blocked import Primitives, Steps, blocked_primitives, check_kernel_block

__all__ = ["DEFAULT_BLOCK", "apply", "col_lse", "grad_qk", "primitives", "row_lse"]

DEFAULT_BLOCK = 64
"""Queries and keys per tile (a power of two >= 16; on a GPU, check 32 / 64 / 128 and num_warps)."""

_NEG = -1.0e30
"""Score of an invalid pair before the exponential: finite, so an all-invalid tile gives no NaN."""

_NT = (((1,), (1,)), ((), ()))
"""dot_general dimensions of x @ y.T."""


def _dot_t(x: jax.Array, y: jax.Array) -> jax.Array:
    return jax.lax.dot_general(x, y, _NT, precision=jax.lax.Precision.HIGHEST, preferred_element_type=x.dtype)


def _dot(x: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.dot(x, y, precision=jax.lax.Precision.HIGHEST, preferred_element_type=x.dtype)


def _lse_kernel(x_ref, y_ref, pot_ref, mask_ref, out_ref, *, block: int, n_blocks: int, scale: float):
    """out_o = LSE_i(scale * x_o . y_i + pot_i) over valid (o, i); 0 where no pair is valid."""
    start_o = pl.program_id(1) * block
    x = x_ref[...]
    ok_o = mask_ref[pl.ds(start_o, block)] != 0

    def body(j, carry):
        run_max, run_sum = carry
        sl = pl.ds(j * block, block)
        valid = ok_o[:, None] & (mask_ref[sl] != 0)[None, :]
        s = jnp.where(valid, _dot_t(x, y_ref[sl, :]) * scale + pot_ref[sl][None, :], _NEG)
        new_max = jnp.maximum(run_max, jnp.max(s, axis=1))
        p = jnp.where(valid, jnp.exp(s - new_max[:, None]), 0.0)
        return new_max, run_sum * jnp.exp(run_max - new_max) + jnp.sum(p, axis=1)

    init = (jnp.full((block,), _NEG, x.dtype), jnp.zeros((block,), x.dtype))
    run_max, run_sum = jax.lax.fori_loop(0, n_blocks, body, init)
    out_ref[...] = jnp.where(run_sum > 0, run_max + jnp.log(jnp.where(run_sum > 0, run_sum, 1.0)), 0.0)


def _apply_kernel(x_ref, y_ref, pot_o_ref, pot_i_ref, v_ref, mask_ref, out_ref, *, block, n_blocks, scale):
    """out_o = sum_i exp(scale * x_o . y_i + a_o + b_i) v_i over valid (o, i)."""
    start_o = pl.program_id(1) * block
    x = x_ref[...]
    ok_o = mask_ref[pl.ds(start_o, block)] != 0
    pot_o = pot_o_ref[pl.ds(start_o, block)]

    def body(j, acc):
        sl = pl.ds(j * block, block)
        valid = ok_o[:, None] & (mask_ref[sl] != 0)[None, :]
        s = _dot_t(x, y_ref[sl, :]) * scale + pot_o[:, None] + pot_i_ref[sl][None, :]
        e = jnp.where(valid, jnp.exp(jnp.where(valid, s, _NEG)), 0.0)
        return acc + _dot(e, v_ref[sl, :])

    out_ref[...] = jax.lax.fori_loop(0, n_blocks, body, jnp.zeros(out_ref.shape, x.dtype))


def _grad_kernel(
    x_ref, y_ref, u_o_ref, u_i_ref, pot_o_ref, pot_i_ref, w_o_ref, w_i_ref, mask_ref, out_ref, *,
    block, n_blocks, n_steps, scale,
):  # fmt: skip
    """out_o = scale * sum_i dC_oi y_i, dC recomputed per tile from the steps' potentials and adjoints.

    dC_oi = P_oi (u_o . u'_i) - sum_t E_t,oi (w_t,o + w'_t,i), E_t = exp(scale x_o . y_i + a_t,o + b_t,i),
    P = E_{N-1}; pot/w refs are (N, T), the adjoints of steps normalising the other axis being 0.
    """
    start_o = pl.program_id(1) * block
    so = pl.ds(start_o, block)
    x = x_ref[...]
    u_o = u_o_ref[...]
    ok_o = mask_ref[so] != 0

    def body(j, acc):
        sl = pl.ds(j * block, block)
        valid = ok_o[:, None] & (mask_ref[sl] != 0)[None, :]
        s = jnp.where(valid, _dot_t(x, y_ref[sl, :]) * scale, _NEG)

        def step(t, carry):
            dc, _ = carry
            e = jnp.where(valid, jnp.exp(s + pot_o_ref[t, so][:, None] + pot_i_ref[t, sl][None, :]), 0.0)
            return dc - e * (w_o_ref[t, so][:, None] + w_i_ref[t, sl][None, :]), e

        zero = jnp.zeros((block, block), x.dtype)
        dc, plan = jax.lax.fori_loop(0, n_steps, step, (zero, zero))
        dc = dc + plan * _dot_t(u_o, u_i_ref[sl, :])
        return acc + _dot(dc, y_ref[sl, :])

    out_ref[...] = jax.lax.fori_loop(0, n_blocks, body, jnp.zeros(out_ref.shape, x.dtype)) * scale


def _interpret(interpret: bool | None) -> bool:
    return jax.default_backend() == "cpu" if interpret is None else interpret


def _width(n: int) -> int:
    """A feature size padded to a power of two >= 16, as GPU dots and loads need (zeros change no product)."""
    return max(16, 1 << (n - 1).bit_length())


def _flat(x: jax.Array, padded: int) -> jax.Array:
    """(B, H, T) -> (B * H, padded), (B, H, T, n) -> (B * H, padded, _width(n)), zero-padded."""
    x = x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])
    return jnp.pad(x, [(0, 0), (0, padded - x.shape[1])] + [(0, _width(n) - n) for n in x.shape[2:]])


def _flat_mask(mask: jax.Array, shape: tuple[int, ...], padded: int) -> jax.Array:
    """(B, 1 | H, T) bool -> (B * H, padded) int32, 0 on padding and on the tail."""
    return _flat(jnp.broadcast_to(mask, shape).astype(jnp.int32), padded)


def _mask(mask: jax.Array | None, q: jax.Array) -> jax.Array:
    """The padding mask, all True for None (one compiled kernel serves both)."""
    return jnp.ones((q.shape[0], 1, q.shape[2]), jnp.bool_) if mask is None else mask


def _padded(t: int, block: int) -> int:
    return -(-t // block) * block


def _whole(padded: int, widths: Sequence[int | None]) -> list:
    """BlockSpecs of whole per-(b, h) arrays: an int width is (padded, width), None a (padded,) vector."""
    return [
        pl.BlockSpec((None, padded), lambda bh, i: (bh, 0))
        if w is None
        else pl.BlockSpec((None, padded, w), lambda bh, i: (bh, 0, 0))
        for w in widths
    ]


@functools.partial(jax.jit, static_argnames=("block", "interpret"))
def _lse(outer, inner, pot, mask, *, block: int, interpret: bool) -> jax.Array:
    b, h, t, d = outer.shape
    tp, dw = _padded(t, block), _width(d)
    call = pl.pallas_call(
        functools.partial(_lse_kernel, block=block, n_blocks=tp // block, scale=d**-0.5),
        grid=(b * h, tp // block),
        in_specs=[pl.BlockSpec((None, block, dw), lambda bh, i: (bh, i, 0)), *_whole(tp, [dw, None, None])],
        out_specs=pl.BlockSpec((None, block), lambda bh, i: (bh, i)),
        out_shape=jax.ShapeDtypeStruct((b * h, tp), outer.dtype),
        interpret=interpret,
    )
    out = call(_flat(outer, tp), _flat(inner, tp), _flat(pot, tp), _flat_mask(mask, (b, h, t), tp))
    return out[:, :t].reshape(b, h, t)


def row_lse(
    q: jax.Array, k: jax.Array, g: jax.Array, mask: jax.Array | None = None, *, block: int = DEFAULT_BLOCK,
    interpret: bool | None = None,
) -> jax.Array:  # fmt: skip
    """``sinkhorn_blocked.RowLse`` as a Pallas kernel (``block``: tile size; ``interpret``: None = on the CPU)."""
    check_kernel_block(block)
    return _lse(q, k, g, _mask(mask, q), block=block, interpret=_interpret(interpret))


def col_lse(
    q: jax.Array, k: jax.Array, f: jax.Array, mask: jax.Array | None = None, *, block: int = DEFAULT_BLOCK,
    interpret: bool | None = None,
) -> jax.Array:  # fmt: skip
    """``sinkhorn_blocked.ColLse`` as a Pallas kernel (``block``: tile size; ``interpret``: None = on the CPU)."""
    check_kernel_block(block)
    return _lse(k, q, f, _mask(mask, q), block=block, interpret=_interpret(interpret))


@functools.partial(jax.jit, static_argnames=("transpose", "block", "interpret"))
def _apply(q, k, a, b, x, mask, *, transpose: bool, block: int, interpret: bool) -> jax.Array:
    outer, inner, pot_o, pot_i = (k, q, b, a) if transpose else (q, k, a, b)
    bsz, h, t, d = q.shape
    e = x.shape[-1]
    tp, dw, ew = _padded(t, block), _width(d), _width(e)
    call = pl.pallas_call(
        functools.partial(_apply_kernel, block=block, n_blocks=tp // block, scale=d**-0.5),
        grid=(bsz * h, tp // block),
        in_specs=[
            pl.BlockSpec((None, block, dw), lambda bh, i: (bh, i, 0)),
            *_whole(tp, [dw, None, None, ew, None]),
        ],
        out_specs=pl.BlockSpec((None, block, ew), lambda bh, i: (bh, i, 0)),
        out_shape=jax.ShapeDtypeStruct((bsz * h, tp, ew), q.dtype),
        interpret=interpret,
    )
    args = [_flat(z, tp) for z in (outer, inner, pot_o, pot_i, x)]
    out = call(*args, _flat_mask(mask, (bsz, h, t), tp))
    return out[:, :t, :e].reshape(bsz, h, t, e)


def apply(
    q: jax.Array,
    k: jax.Array,
    a: jax.Array,
    b: jax.Array,
    x: jax.Array,
    mask: jax.Array | None = None,
    transpose: bool = False,
    *,
    block: int = DEFAULT_BLOCK,
    interpret: bool | None = None,
) -> jax.Array:
    """``sinkhorn_blocked.Apply`` as a Pallas kernel (``block``: tile size; ``interpret``: None = on the CPU)."""
    check_kernel_block(block)
    return _apply(
        q, k, a, b, x, _mask(mask, q), transpose=bool(transpose), block=block, interpret=_interpret(interpret)
    )


@functools.partial(jax.jit, static_argnames=("block", "interpret"))
def _grad(q, k, v, dout, a, b, w, mask, *, block: int, interpret: bool) -> tuple[jax.Array, jax.Array]:
    bsz, h, t, d = q.shape
    e = v.shape[-1]
    n = a.shape[0]
    tp, dw, ew = _padded(t, block), _width(d), _width(e)
    rows = w.at[1::2].set(0.0)
    cols = w.at[0::2].set(0.0)

    def steps_flat(z):
        return jax.vmap(lambda y: _flat(y, tp))(z)

    a, b, rows, cols = (steps_flat(z) for z in (a, b, rows, cols))
    fq, fk, fv, fo = (_flat(z, tp) for z in (q, k, v, dout))
    step_spec = pl.BlockSpec((n, None, tp), lambda bh, i: (0, bh, 0))
    grads = []
    for outer, inner, u_o, u_i, pot_o, pot_i, w_o, w_i in (
        (fq, fk, fo, fv, a, b, rows, cols),
        (fk, fq, fv, fo, b, a, cols, rows),
    ):
        call = pl.pallas_call(
            functools.partial(_grad_kernel, block=block, n_blocks=tp // block, n_steps=n, scale=d**-0.5),
            grid=(bsz * h, tp // block),
            in_specs=[
                pl.BlockSpec((None, block, dw), lambda bh, i: (bh, i, 0)),
                *_whole(tp, [dw]),
                pl.BlockSpec((None, block, ew), lambda bh, i: (bh, i, 0)),
                *_whole(tp, [ew]),
                step_spec,
                step_spec,
                step_spec,
                step_spec,
                *_whole(tp, [None]),
            ],
            out_specs=pl.BlockSpec((None, block, dw), lambda bh, i: (bh, i, 0)),
            out_shape=jax.ShapeDtypeStruct((bsz * h, tp, dw), q.dtype),
            interpret=interpret,
        )
        out = call(outer, inner, u_o, u_i, pot_o, pot_i, w_o, w_i, _flat_mask(mask, (bsz, h, t), tp))
        grads.append(out[:, :t, :d].reshape(bsz, h, t, d))
    return grads[0], grads[1]


def grad_qk(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    dout: jax.Array,
    steps: Steps,
    mask: jax.Array | None = None,
    *,
    block: int = DEFAULT_BLOCK,
    interpret: bool | None = None,
) -> tuple[jax.Array, jax.Array]:
    """``sinkhorn_blocked.GradQk`` as a Pallas kernel (``block``: tile size; ``interpret``: None = on the CPU)."""
    check_kernel_block(block)
    a, b, w = steps
    return _grad(q, k, v, dout, a, b, w, _mask(mask, q), block=block, interpret=_interpret(interpret))


@functools.cache
def primitives(block: int = DEFAULT_BLOCK, interpret: bool | None = None) -> Primitives:
    """The four Pallas passes with ``block`` x ``block`` tiles, as the blocked driver's bundle."""
    check_kernel_block(block)
    return blocked_primitives(row_lse, col_lse, apply, grad_qk, block, name="pallas", interpret=interpret)
