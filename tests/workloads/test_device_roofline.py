"""device_roofline's check: holds, does not hold, too small to decide or not measured, on real rows."""

from __future__ import annotations

import pytest

import workloads
from tests.helpers import run_rows, smoke_params

ROOF = workloads.get("device_roofline")


@pytest.fixture(scope="module")
def matmul_rows():
    """Real matmul trials at two sizes on one backend."""
    return run_rows(ROOF, [("torch", smoke_params(ROOF, n=n, timing_repeats=3), 0) for n in (32, 64)])


def _scaled(rows, n, factor):
    """The rows with the FLOP/s of size ``n`` multiplied by ``factor``."""
    rows = rows.copy()
    at = (rows["metric"] == "flop_per_s") & (rows["p_n"] == n)
    rows.loc[at, "value"] *= factor
    return rows


def test_roofline_throughput_check_holds_fails_and_needs_two_sizes(matmul_rows):
    small = matmul_rows[matmul_rows["metric"] == "flop_per_s"].groupby("p_n")["value"].median()
    # make the larger size exactly 2x (holds) or 0.5x (does not hold) the smaller size's throughput
    faster = _scaled(matmul_rows, 64, 2 * small[32] / small[64])
    slower = _scaled(matmul_rows, 64, 0.5 * small[32] / small[64])
    (holds,) = ROOF.checks(faster)
    (fails,) = ROOF.checks(slower)
    (one,) = ROOF.checks(matmul_rows[matmul_rows["p_n"] == 32])
    assert holds.verdict == "holds" and "(2.00x)" in holds.measured
    assert fails.verdict == "does not hold" and "(0.50x)" in fails.measured
    assert one.verdict == "too small to decide" and "1 sizes n < 2" in one.note
    (none,) = ROOF.checks(matmul_rows[matmul_rows["metric"] == "time_s"])
    assert none.verdict == "not measured"
