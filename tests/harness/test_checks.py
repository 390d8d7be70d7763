"""core.checks: the four verdicts, declared needs, and paired intervals with three outcomes."""

from __future__ import annotations

import pandas as pd
import pytest

from core.checks import UNDECIDED, all_hold, at_least, decide, device_in, distinct, paired_interval, seeds, span

ROWS = pd.DataFrame(
    {
        "backend": "torch",
        "device_name": "cpu",
        "device_kind": "cpu",
        "params": "{}",
        "seed": [0, 1, 2],
        "p_depth": [4, 8, 32],
        "p_epochs": [20, 20, 20],
    }
)


def _holds(rows):
    return True, "measured"


@pytest.mark.parametrize(
    "outcome, verdict",
    [(True, "holds"), (False, "does not hold"), (None, "not measured"), (UNDECIDED, "too small to decide")],
)
def test_the_test_outcome_gives_the_verdict(outcome, verdict):
    check = decide("c", "claim", ROWS, lambda r: (outcome, "m"), figure="Fig. 1.1", note="deviation")
    assert (check.verdict, check.measured, check.figure) == (verdict, "m", "Fig. 1.1")
    assert "deviation" in check.note
    assert check.passed is {"holds": True, "does not hold": False}.get(verdict)


def test_no_rows_is_not_measured_and_runs_no_test():
    check = decide("c", "claim", ROWS.iloc[0:0], lambda r: 1 / 0, missing="no depth")
    assert (check.verdict, check.measured) == ("not measured", "no depth")


def test_a_shortfall_is_too_small_to_decide_and_still_shows_what_was_measured():
    check = decide("c", "claim", ROWS, _holds, needs=[seeds(5), at_least("p_epochs", 10, "epochs")])
    assert check.verdict == "too small to decide" and check.measured == "measured"
    assert "3 seed(s) per configuration < 5" in check.note and "epochs" not in check.note


@pytest.mark.parametrize(
    "need, short",
    [
        (seeds(3), False),
        (seeds(4), True),
        (at_least("p_epochs", 20, "epochs"), False),
        (at_least("p_epochs", 21, "epochs"), True),
        (distinct("p_depth", 3, "depths"), False),
        (distinct("p_depth", 4, "depths"), True),
        (span("p_depth", 8, "depths"), False),
        (span("p_depth", 9, "depths"), True),
        (device_in(("cuda",), "a GPU"), True),
        (device_in(("cpu", "cuda"), "a device"), False),
    ],
)
def test_each_need_reports_a_shortfall_only_below_its_minimum(need, short):
    assert (need(ROWS) is not None) is short


def test_paired_interval_is_seeded_and_one_pair_is_that_pair():
    a, b = [1.0, 2.0, 3.5, 4.0], [0.5, 1.0, 1.5, 1.0]
    assert paired_interval(a, b) == paired_interval(a, b)
    one = paired_interval([2.0], [0.5])
    assert (one.mean, one.low, one.high, one.n) == (1.5, 1.5, 1.5, 1)
    with pytest.raises(ValueError, match="equal-length"):
        paired_interval([], [])


def test_side_is_true_false_or_undecided_and_all_hold_combines():
    above = paired_interval([1.0, 1.1, 1.2], [0.0, 0.0, 0.0])
    across = paired_interval([1.0, -1.0, 0.5], [0.0, 0.0, 0.0])
    assert above.side("above") is True and above.side("below") is False
    assert across.side("above") == UNDECIDED and across.side("below", 5.0) is True
    assert all_hold([True, True]) is True
    assert all_hold([True, UNDECIDED]) == UNDECIDED
    assert all_hold([UNDECIDED, False, True]) is False
