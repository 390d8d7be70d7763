"""harness_probe's check: a no-op trial spends under a millisecond inside the trial."""

from __future__ import annotations

import workloads
from tests.helpers import run_rows, smoke_params

PROBE = workloads.get("harness_probe")


def test_probe_no_op_check_holds_under_a_millisecond_and_not_above():
    rows = run_rows(PROBE, [("torch", smoke_params(PROBE), r) for r in range(2)])
    (check,) = PROBE.checks(rows)
    assert check.verdict == "holds"
    slow = rows.assign(value=rows["value"].where(rows["metric"] != "trial_s", 2e-3))
    assert PROBE.checks(slow)[0].verdict == "does not hold"
    assert PROBE.checks(rows.iloc[0:0])[0].verdict == "not measured"
