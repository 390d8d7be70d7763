"""What the workloads that train with a relaxed top-k operator beside the hard one share: a test and a figure.

References: thesis chapter 6 (the relaxed top-k operator: Fig. 6.5 pruning, Table 6.2 sparse MoE).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from core.checks import paired_interval, pairs
from core.figures import Figure


def gain_over_hard(
    first: str, second: str, *, relaxed: str, column: str, difference: str, medians: str, missing: str
) -> Callable[[pd.DataFrame], tuple[bool | str | None, str]]:
    """Test: ``first`` minus ``second`` (labels of the ``label`` column), paired over seeds, is above 0.

    Args:
        first, second: the labels compared, one of them ``"hard"``.
        relaxed: the relaxed operator's label, whose median the text shows beside the hard one's.
        column: the column whose median per label the text shows.
        difference: what ``first - second`` measures, as the text names it.
        medians: how the text introduces the two medians.
        missing: the text when no seed ran both.

    Returns:
        A check's test: (whether the 95% interval is above 0, or None when no seed ran both; the measured text).
    """

    def test(rows: pd.DataFrame) -> tuple[bool | str | None, str]:
        paired = pairs(rows, "label", first, second)
        if paired.empty:
            return None, missing
        interval = paired_interval(paired["first"], paired["second"])
        median = rows.groupby("label")[column].median()
        return interval.side("above"), (
            f"{difference} = {interval.text()}; {medians} hard {median.get('hard', np.nan):.3f}, "
            f"relaxed {median.get(relaxed, np.nan):.3f}"
        )

    return test


def step_time_bars(title: str, x: str, series: tuple[str, ...], x_title: str) -> Figure:
    """Bars of the time per training step, one per value of ``x`` (the operator), grouped by ``series``."""
    return Figure(title, "step_time_s", x, series=series, kind="bar", x_title=x_title, y_title="time per step")
