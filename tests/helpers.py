"""Tolerances in one place (STYLE.md rule 12): float64 oracles, float32 runs, looser GPU bounds."""
from __future__ import annotations

import numpy as np

TOL = {
    "float64": dict(rtol=1e-10, atol=1e-10),
    "float32": dict(rtol=1e-5, atol=1e-5),
    "bfloat16": dict(rtol=2e-2, atol=2e-2),
}
"""rtol/atol by dtype for comparisons between backends or against an oracle, on the CPU."""


def assert_close(actual, expected, dtype: str = "float64", **override) -> None:
    """``np.testing.assert_allclose`` with the tolerance of ``dtype`` (``override`` wins)."""
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64),
                               **(TOL[dtype] | override))


def dtype_eps(dtype: str) -> float:
    """Rounding error of one accumulated result in ``dtype``, relative to the largest element."""
    return {"float64": 1e-12, "float32": 1e-5, "bfloat16": 1e-2}[dtype]
