"""Fused Triton kernels for O(T)-memory log-domain Sinkhorn attention (the ``triton`` impl).

The four primitives of the blocked Sinkhorn driver (``row_lse``, ``col_lse``, ``apply``, ``grad_qk``) as
``@triton.jit`` kernels, one program per (batch * head, block of T), each recomputing the tile
``s q_i . k_j`` of the scores instead of storing the T x T matrix. Rows and columns play symmetric roles, so
three kernels serve all four primitives: each program owns an *outer* block (queries for ``row_lse``,
``apply`` and ``dq``; keys for ``col_lse``, ``apply(transpose=True)`` and ``dk``) and loops over the *inner*
blocks, where ``k q^T`` is the transposed tile. T need not be a multiple of the block: the tail is loaded
with a bounds mask and treated as padding; ``d`` is padded to a power of two >= 16 the same way.

On a CUDA device the kernels compile through Triton; on the CPU they run in Triton's interpreter, which needs
``TRITON_INTERPRET=1`` in the environment before this module is imported. Float32 tiles are multiplied in
IEEE float32 (no TF32), float64 in float64.

References:
    Thesis chapter 5 (Sinkformers), appendix 5.B eq. 5.13 (log-domain iterations); the online log-sum-exp
    over tiles is that of FlashAttention (Dao et al., 2022).
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from ..sinkhorn_blocked import Primitives, Steps, blocked_primitives, check_kernel_block

__all__ = ["DEFAULT_BLOCK", "apply", "col_lse", "grad_qk", "primitives", "row_lse"]

DEFAULT_BLOCK = 64
"""Queries and keys per tile (a power of two >= 16; on a GPU, check 32 / 64 / 128 against num_warps)."""

_NEG = tl.constexpr(-1.0e30)
"""Score of an invalid pair before the exponential: finite, so an all-invalid tile gives no NaN."""


@triton.jit
def _load_rows(ptr, bh, offs, offs_d, T, D):
    """The (len(offs), BLOCK_D) tile of rows ``offs`` of a (BH, T, D) array; 0 outside T and D."""
    ok = (offs[:, None] < T) & (offs_d[None, :] < D)
    return tl.load(ptr + bh * T * D + offs[:, None] * D + offs_d[None, :], mask=ok, other=0.0)


@triton.jit
def _valid(mask_ptr, bh, offs, T, HAS_MASK: tl.constexpr):
    """Whether each index of ``offs`` is a real token: inside T and, with a mask, not padding."""
    ok = offs < T
    if HAS_MASK:
        ok = ok & (tl.load(mask_ptr + bh * T + offs, mask=ok, other=0) != 0)
    return ok


@triton.jit
def _lse_kernel(
    outer_ptr,
    inner_ptr,
    pot_ptr,
    mask_ptr,
    out_ptr,
    T,
    D,
    scale,
    HAS_MASK: tl.constexpr,
    BLOCK_O: tl.constexpr,
    BLOCK_I: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """out_o = LSE_i(scale * x_o . y_i + pot_i) over valid (o, i); 0 where no pair is valid."""
    bh = tl.program_id(0).to(tl.int64)  # offsets past 2**31 elements stay exact
    offs_o = tl.program_id(1) * BLOCK_O + tl.arange(0, BLOCK_O)
    offs_d = tl.arange(0, BLOCK_D)
    x = _load_rows(outer_ptr, bh, offs_o, offs_d, T, D)
    ok_o = _valid(mask_ptr, bh, offs_o, T, HAS_MASK)
    run_max = tl.full((BLOCK_O,), _NEG, dtype=x.dtype)
    run_sum = tl.zeros((BLOCK_O,), dtype=x.dtype)
    for start in range(0, T, BLOCK_I):
        offs_i = start + tl.arange(0, BLOCK_I)
        y = _load_rows(inner_ptr, bh, offs_i, offs_d, T, D)
        ok_i = _valid(mask_ptr, bh, offs_i, T, HAS_MASK)
        pot = tl.load(pot_ptr + bh * T + offs_i, mask=offs_i < T, other=0.0)
        valid = ok_o[:, None] & ok_i[None, :]
        s = tl.dot(x, tl.trans(y), input_precision="ieee") * scale + pot[None, :]
        s = tl.where(valid, s, _NEG)
        new_max = tl.maximum(run_max, tl.max(s, axis=1))
        p = tl.where(valid, tl.exp(s - new_max[:, None]), 0.0)
        run_sum = run_sum * tl.exp(run_max - new_max) + tl.sum(p, axis=1)
        run_max = new_max
    out = tl.where(run_sum > 0, run_max + tl.log(tl.where(run_sum > 0, run_sum, 1.0)), 0.0)
    tl.store(out_ptr + bh * T + offs_o, out, mask=offs_o < T)


@triton.jit
def _apply_kernel(
    outer_ptr,
    inner_ptr,
    pot_o_ptr,
    pot_i_ptr,
    x_ptr,
    mask_ptr,
    out_ptr,
    T,
    D,
    E,
    scale,
    HAS_MASK: tl.constexpr,
    BLOCK_O: tl.constexpr,
    BLOCK_I: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_E: tl.constexpr,
):
    """out_o = sum_i exp(scale * x_o . y_i + a_o + b_i) x_i over valid (o, i)."""
    bh = tl.program_id(0).to(tl.int64)  # offsets past 2**31 elements stay exact
    offs_o = tl.program_id(1) * BLOCK_O + tl.arange(0, BLOCK_O)
    offs_d = tl.arange(0, BLOCK_D)
    offs_e = tl.arange(0, BLOCK_E)
    xo = _load_rows(outer_ptr, bh, offs_o, offs_d, T, D)
    ok_o = _valid(mask_ptr, bh, offs_o, T, HAS_MASK)
    pot_o = tl.load(pot_o_ptr + bh * T + offs_o, mask=offs_o < T, other=0.0)
    acc = tl.zeros((BLOCK_O, BLOCK_E), dtype=xo.dtype)
    for start in range(0, T, BLOCK_I):
        offs_i = start + tl.arange(0, BLOCK_I)
        y = _load_rows(inner_ptr, bh, offs_i, offs_d, T, D)
        ok_i = _valid(mask_ptr, bh, offs_i, T, HAS_MASK)
        pot_i = tl.load(pot_i_ptr + bh * T + offs_i, mask=offs_i < T, other=0.0)
        s = tl.dot(xo, tl.trans(y), input_precision="ieee") * scale + pot_o[:, None] + pot_i[None, :]
        valid = ok_o[:, None] & ok_i[None, :]
        e = tl.where(valid, tl.exp(tl.where(valid, s, _NEG)), 0.0)
        xi = _load_rows(x_ptr, bh, offs_i, offs_e, T, E)
        acc += tl.dot(e, xi, input_precision="ieee")
    ok = (offs_o[:, None] < T) & (offs_e[None, :] < E)
    tl.store(out_ptr + bh * T * E + offs_o[:, None] * E + offs_e[None, :], acc, mask=ok)


@triton.jit
def _grad_kernel(
    outer_ptr,
    inner_ptr,
    aux_o_ptr,
    aux_i_ptr,
    pot_o_ptr,
    pot_i_ptr,
    w_o_ptr,
    w_i_ptr,
    mask_ptr,
    out_ptr,
    T,
    D,
    E,
    BH,
    N,
    scale,
    HAS_MASK: tl.constexpr,
    BLOCK_O: tl.constexpr,
    BLOCK_I: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_E: tl.constexpr,
):
    """out_o = scale * sum_i dC_oi y_i, dC recomputed per tile from the N steps' potentials and adjoints.

    dC_oi = P_oi (u_o . u'_i) - sum_t E_t,oi (w_t,o + w'_t,i), E_t = exp(scale x_o . y_i + a_t,o + b_t,i),
    P = E_{N-1}; pot/w arrays are (N, BH, T), the adjoints of steps normalising the other axis being 0.
    """
    bh = tl.program_id(0).to(tl.int64)  # offsets past 2**31 elements stay exact
    offs_o = tl.program_id(1) * BLOCK_O + tl.arange(0, BLOCK_O)
    offs_d = tl.arange(0, BLOCK_D)
    offs_e = tl.arange(0, BLOCK_E)
    in_o = offs_o < T
    xo = _load_rows(outer_ptr, bh, offs_o, offs_d, T, D)
    uo = _load_rows(aux_o_ptr, bh, offs_o, offs_e, T, E)
    ok_o = _valid(mask_ptr, bh, offs_o, T, HAS_MASK)
    acc = tl.zeros((BLOCK_O, BLOCK_D), dtype=xo.dtype)
    for start in range(0, T, BLOCK_I):
        offs_i = start + tl.arange(0, BLOCK_I)
        in_i = offs_i < T
        y = _load_rows(inner_ptr, bh, offs_i, offs_d, T, D)
        ui = _load_rows(aux_i_ptr, bh, offs_i, offs_e, T, E)
        valid = ok_o[:, None] & _valid(mask_ptr, bh, offs_i, T, HAS_MASK)[None, :]
        s = tl.dot(xo, tl.trans(y), input_precision="ieee") * scale
        s = tl.where(valid, s, _NEG)
        dc = tl.zeros((BLOCK_O, BLOCK_I), dtype=xo.dtype)
        e = dc
        for t in range(0, N):
            base = (t * BH + bh) * T
            a = tl.load(pot_o_ptr + base + offs_o, mask=in_o, other=0.0)
            b = tl.load(pot_i_ptr + base + offs_i, mask=in_i, other=0.0)
            wo = tl.load(w_o_ptr + base + offs_o, mask=in_o, other=0.0)
            wi = tl.load(w_i_ptr + base + offs_i, mask=in_i, other=0.0)
            e = tl.where(valid, tl.exp(s + a[:, None] + b[None, :]), 0.0)
            dc -= e * (wo[:, None] + wi[None, :])
        dc += e * tl.dot(uo, tl.trans(ui), input_precision="ieee")
        acc += tl.dot(dc, y, input_precision="ieee")
    ok = in_o[:, None] & (offs_d[None, :] < D)
    tl.store(out_ptr + bh * T * D + offs_o[:, None] * D + offs_d[None, :], acc * scale, mask=ok)


def _pow2(n: int) -> int:
    return max(16, triton.next_power_of_2(n))


def _flat(x: torch.Tensor) -> torch.Tensor:
    """(B, H, T, ...) -> contiguous (B * H, T, ...)."""
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:]).contiguous()


def _flat_mask(mask: torch.Tensor | None, q: torch.Tensor) -> torch.Tensor:
    """(B, 1 | H, T) bool -> contiguous (B * H, T) int8; a dummy when there is no mask."""
    if mask is None:
        return torch.ones(1, dtype=torch.int8, device=q.device)
    return _flat(mask.expand(q.shape[:-1]).to(torch.int8))


def _lse(outer: torch.Tensor, inner: torch.Tensor, pot: torch.Tensor, mask: torch.Tensor | None, block: int):
    check_kernel_block(block)
    b, h, t, d = outer.shape
    out = torch.empty((b * h, t), dtype=outer.dtype, device=outer.device)
    grid = (b * h, triton.cdiv(t, block))
    _lse_kernel[grid](
        _flat(outer), _flat(inner), _flat(pot), _flat_mask(mask, outer), out, t, d, d**-0.5,
        HAS_MASK=mask is not None, BLOCK_O=block, BLOCK_I=block, BLOCK_D=_pow2(d),
    )  # fmt: skip
    return out.reshape(b, h, t)


def row_lse(
    q: torch.Tensor, k: torch.Tensor, g: torch.Tensor, mask: torch.Tensor | None = None, *, block: int = DEFAULT_BLOCK
) -> torch.Tensor:
    """``sinkhorn_blocked.RowLse`` as a fused Triton kernel (``block``: tile size along T)."""
    return _lse(q, k, g, mask, block)


def col_lse(
    q: torch.Tensor, k: torch.Tensor, f: torch.Tensor, mask: torch.Tensor | None = None, *, block: int = DEFAULT_BLOCK
) -> torch.Tensor:
    """``sinkhorn_blocked.ColLse`` as a fused Triton kernel (``block``: tile size along T)."""
    return _lse(k, q, f, mask, block)


def apply(
    q: torch.Tensor,
    k: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    x: torch.Tensor,
    mask: torch.Tensor | None = None,
    transpose: bool = False,
    *,
    block: int = DEFAULT_BLOCK,
) -> torch.Tensor:
    """``sinkhorn_blocked.Apply`` as a fused Triton kernel (``block``: tile size along T)."""
    check_kernel_block(block)
    outer, inner, pot_o, pot_i = (k, q, b, a) if transpose else (q, k, a, b)
    bsz, h, t, d = q.shape
    e = x.shape[-1]
    out = torch.empty((bsz * h, t, e), dtype=q.dtype, device=q.device)
    grid = (bsz * h, triton.cdiv(t, block))
    _apply_kernel[grid](
        _flat(outer), _flat(inner), _flat(pot_o), _flat(pot_i), _flat(x), _flat_mask(mask, q), out,
        t, d, e, d**-0.5,
        HAS_MASK=mask is not None, BLOCK_O=block, BLOCK_I=block, BLOCK_D=_pow2(d), BLOCK_E=_pow2(e),
    )  # fmt: skip
    return out.reshape(bsz, h, t, e)


def grad_qk(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    dout: torch.Tensor,
    steps: Steps,
    mask: torch.Tensor | None = None,
    *,
    block: int = DEFAULT_BLOCK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``sinkhorn_blocked.GradQk`` as a fused Triton kernel (``block``: tile size along T)."""
    check_kernel_block(block)
    bsz, h, t, d = q.shape
    n, e = steps.a.shape[0], v.shape[-1]
    a, b, w = (z.reshape(n, bsz * h, t).contiguous() for z in (steps.a, steps.b, steps.w))
    rows = torch.zeros_like(w)
    rows[0::2] = w[0::2]
    cols = torch.zeros_like(w)
    cols[1::2] = w[1::2]
    fq, fk, fv, fo, fm = _flat(q), _flat(k), _flat(v), _flat(dout), _flat_mask(mask, q)
    grid = (bsz * h, triton.cdiv(t, block))
    grads = []
    for outer, inner, aux_o, aux_i, pot_o, pot_i, w_o, w_i in (
        (fq, fk, fo, fv, a, b, rows, cols),
        (fk, fq, fv, fo, b, a, cols, rows),
    ):
        out = torch.empty((bsz * h, t, d), dtype=q.dtype, device=q.device)
        _grad_kernel[grid](
            outer, inner, aux_o, aux_i, pot_o, pot_i, w_o, w_i, fm, out, t, d, e, bsz * h, n, d**-0.5,
            HAS_MASK=mask is not None, BLOCK_O=block, BLOCK_I=block, BLOCK_D=_pow2(d), BLOCK_E=_pow2(e),
        )  # fmt: skip
        grads.append(out.reshape(bsz, h, t, d))
    return grads[0], grads[1]


@functools.cache
def primitives(block: int = DEFAULT_BLOCK) -> Primitives:
    """The four Triton passes with ``block`` x ``block`` tiles, as the blocked driver's bundle."""
    check_kernel_block(block)
    return blocked_primitives(row_lse, col_lse, apply, grad_qk, block, name="triton")
