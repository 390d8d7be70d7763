"""Exactly reversible multiplication by a rational gamma in int64 fixed point (framework-free).

Both backends hold a Momentum ResNet's state (x, v) as int64 fixed point with ``frac_bits``
fractional bits and multiply v by gamma = n/d with an information buffer (thesis appendix 4.C,
Maclaurin et al. 2015): the remainder lost by the division goes into the buffer, and a digit
taken out of the buffer goes into v, so that the multiplication is a bijection on (v, buffer).
This module holds what both backends share: parsing gamma, the fixed-point format, and the
buffer's word schedule (how many int64 words each value needs, known before the forward runs).

The step, for one value c with buffer word i (all integers, floor division)::

    u, i = i mod n, i div n          # take one base-n digit out of the buffer
    a, b = c div d, c mod d
    q = b n + u                      # c n + u = a n d + q, never formed (it could overflow)
    c, r = a n + q div d, q mod d    # c' = floor((c n + u) / d)
    i = i d + r                      # put the base-d remainder into the buffer

and its exact inverse undoes the five lines in reverse order. Compared with the order of the
thesis' Algorithm 1 (push ``c mod d`` first, then pop ``i mod n``), popping first makes the
result ``floor((c n + u) / d)``: within 2 units of ``gamma c`` instead of within ``n`` units,
which matters for gamma = 1 - 1/(50 k) where n is 50 k. The buffer word grows by about
log2(d/n) bits per step either way, as section 4.3.2 says.

References: thesis section 4.3.1 ("Invertibility"), 4.3.2 (memory cost), appendix 4.C.
"""

from __future__ import annotations

import math
from fractions import Fraction

VALUE_BITS = 61
"""|x| and |v| in fixed point stay below 2**61, so a sum of two never wraps an int64."""

WORD_LIMIT = 2**63 - 1
"""The largest value an int64 buffer word may reach (checked on the schedule, not at run time)."""

MAX_DENOMINATOR = 2**20
"""Largest denominator accepted for gamma (keeps ``b n + u`` and ``i d`` far from overflow)."""

FRAC_BITS = {"float64": 40, "float32": 32, "bfloat16": 16, "float16": 16}
"""Default fractional bits per float dtype: finer than the dtype's rounding near 1, and a range
of +-2**(61 - frac_bits) (2e6 in float64, 5e8 in float32) before an overflow is reported."""


def ratio(gamma: float | str | Fraction, *, name: str = "gamma") -> Fraction:
    """gamma as a reduced fraction n/d with d <= MAX_DENOMINATOR.

    Args:
        gamma: a float (0.9, 0.99998), a fraction string ("49999/50000") or a Fraction; in [0, 1].
        name: the field name used in error messages.

    Returns:
        The fraction closest to gamma with a denominator at most ``MAX_DENOMINATOR``.

    References: thesis appendix 4.C (gamma represented as a rational n/d).
    """
    try:
        value = Fraction(gamma) if not isinstance(gamma, str) else Fraction(gamma.strip())
    except (ValueError, ZeroDivisionError, TypeError) as exc:
        raise ValueError(f"{name}={gamma!r} is not a number; give a float or a fraction 'n/d' in [0, 1]") from exc
    if not 0 <= value <= 1:
        raise ValueError(f"{name}={gamma!r} is outside [0, 1]; the momentum term must be in [0, 1]")
    return value.limit_denominator(MAX_DENOMINATOR)


def default_gamma(depth: int) -> Fraction:
    """gamma = 1 - 1/(50 depth), the choice of Fig. 4.2 (one buffer word at any depth)."""
    return Fraction(50 * depth - 1, 50 * depth)


def frac_bits_for(dtype: str, frac_bits: int | None = None) -> int:
    """Fractional bits of the fixed-point state: ``frac_bits`` if given, else the dtype's default."""
    if frac_bits is None:
        if dtype not in FRAC_BITS:
            raise ValueError(f"dtype={dtype!r} has no fixed-point format; allowed: {', '.join(FRAC_BITS)}")
        return FRAC_BITS[dtype]
    if not 1 <= frac_bits <= VALUE_BITS - 1:
        raise ValueError(f"frac_bits={frac_bits} is outside [1, {VALUE_BITS - 1}]")
    return frac_bits


def buffer_schedule(n: int, d: int, depth: int) -> tuple[int, int]:
    """How many steps one int64 buffer word takes before the next word starts, and how many words.

    The bound on a word after m steps from 0 is computed exactly with Python integers
    (B' = (B div n) d + d - 1); a word takes steps while the bound stays below 2**63 - 1, so no
    word can overflow at any depth and the stack of words can be allocated before the forward.

    Args:
        n, d: gamma = n/d, reduced, 0 < n <= d.
        depth: number of multiplications (layers).

    Returns:
        (steps_per_word, words): step k uses word k // steps_per_word; ``words`` is 0 when
        gamma = 1 (nothing is lost).

    References: thesis section 4.3.2 (log2(1/gamma) bits per layer and value).
    """
    if n <= 0 or d <= 0 or n > d:
        raise ValueError(f"buffer_schedule needs 0 < n <= d, got n={n}, d={d}")
    if depth < 1:
        raise ValueError(f"depth={depth} must be at least 1")
    if n == d:
        return depth, 0
    bound, steps = 0, 0
    while steps < depth:
        nxt = (bound // n) * d + d - 1
        if nxt > WORD_LIMIT:
            break
        bound, steps = nxt, steps + 1
    if steps == 0:
        raise ValueError(f"gamma={n}/{d}: one step does not fit in an int64 buffer word")
    return steps, math.ceil(depth / steps)


def buffer_bits_per_value(n: int, d: int, depth: int) -> float:
    """Bits the buffer must hold per value after ``depth`` multiplications: depth log2(d/n)."""
    return depth * math.log2(d / n)
