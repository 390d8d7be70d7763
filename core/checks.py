"""Checks: a claim of the thesis tested on measured rows, with a verdict that knows when a run is too small.

A workload's ``checks(table)`` builds each ``Check`` with :func:`decide`: the rows the claim is about,
the test, and what the claim needs (seeds, epochs, a span of depths) to be decided at all. Claims that
compare two settings over seeds test a paired confidence interval (:func:`paired_interval`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:  # pandas is imported by the report, not by every trial that imports the workload
    import pandas as pd

Verdict = Literal["holds", "does not hold", "not measured", "too small to decide"]
VERDICTS: tuple[Verdict, ...] = ("holds", "does not hold", "too small to decide", "not measured")
UNDECIDED: Literal["too small to decide"] = "too small to decide"
"""What a test returns instead of True or False when its confidence interval contains the claim's threshold."""


@dataclasses.dataclass(frozen=True)
class Check:
    """A claim of the thesis stated as a test on measured data, and what our measurement says.

    ``verdict`` is ``holds`` or ``does not hold`` only when the run had what the claim needs;
    ``not measured`` when the data is missing; ``too small to decide`` when the run's budget, seeds
    or sizes are below what the claim needs (``note`` says which). ``figure`` names the thesis
    figure or section the claim comes from; ``note`` also states deviations from its setting.
    """

    name: str
    claim: str
    verdict: Verdict
    measured: str
    figure: str = ""
    note: str = ""

    @property
    def passed(self) -> bool | None:
        """True when the claim holds, False when it does not, None when undecided."""
        return {"holds": True, "does not hold": False}.get(self.verdict)


Need = Callable[["pd.DataFrame"], "str | None"]
"""What a claim needs of its rows: returns the shortfall in words, or None when the rows suffice."""

Test = Callable[["pd.DataFrame"], "tuple[bool | Literal['too small to decide'] | None, str]"]
"""A claim's test on its rows: (outcome, measured in words); the outcome is None when it cannot be computed,
``UNDECIDED`` when an interval it tests contains the threshold."""


def decide(
    name: str,
    claim: str,
    rows: pd.DataFrame,
    test: Test,
    *,
    needs: Iterable[Need] = (),
    figure: str = "",
    note: str = "",
    missing: str = "no trial measured it",
) -> Check:
    """The check of ``claim`` on ``rows``: not measured, too small to decide, holds or does not hold.

    The test still runs on a run that is too small, so the report shows what was measured beside
    the reason no verdict is given. A test whose interval contains the claim's threshold
    (``UNDECIDED``) is too small to decide too: more seeds would tell.
    """
    if rows.empty:
        return Check(name, claim, "not measured", missing, figure, note)
    shortfalls = [s for need in needs if (s := need(rows))]
    holds, measured = test(rows)
    if shortfalls:
        reason = "too small: " + "; ".join(shortfalls)
        return Check(name, claim, "too small to decide", measured, figure, "; ".join(filter(None, [reason, note])))
    if holds is None:
        return Check(name, claim, "not measured", measured, figure, note)
    if holds == UNDECIDED:
        reason = "too small: the 95% interval contains the claim's threshold (more seeds would decide)"
        return Check(name, claim, UNDECIDED, measured, figure, "; ".join(filter(None, [reason, note])))
    return Check(name, claim, "holds" if holds else "does not hold", measured, figure, note)


def not_measured(name: str, claim: str, missing: str, *, figure: str = "", note: str = "") -> Check:
    """The check of ``claim`` when no row measured it (what ``decide`` gives on no rows).

    Args:
        name: the check's title.
        claim: the thesis' claim, in words.
        missing: why nothing measured it (shown as the measured text).
        figure: the thesis figure or section the claim comes from.
        note: where the run departs from the thesis.

    Returns:
        A ``not measured`` check.
    """
    return Check(name, claim, "not measured", missing, figure, note)


def _distinct(rows: pd.DataFrame, column: str) -> list:
    return sorted(rows[column].dropna().unique()) if column in rows else []


def at_least(column: str, minimum: float, what: str) -> Need:
    """Every trial's ``column`` (a parameter such as ``p_epochs``) is at least ``minimum``."""

    def need(rows: pd.DataFrame) -> str | None:
        values = _distinct(rows, column)
        low = min(values) if values else None
        return None if low is not None and low >= minimum else f"{what} {low} < {minimum:g}"

    return need


def seeds(minimum: int) -> Need:
    """Each configuration ran with at least ``minimum`` seeds (repeats)."""

    def need(rows: pd.DataFrame) -> str | None:
        keys = [c for c in ("backend", "device_name", "params") if c in rows]
        counts = rows.groupby(keys, dropna=False)["seed"].nunique().tolist() if keys else [rows["seed"].nunique()]
        fewest = int(min(counts)) if counts else 0
        return None if fewest >= minimum else f"{fewest} seed(s) per configuration < {minimum}"

    return need


def distinct(column: str, minimum: int, what: str) -> Need:
    """At least ``minimum`` distinct values of ``column`` (e.g. depths, epochs recorded)."""

    def need(rows: pd.DataFrame) -> str | None:
        n = len(_distinct(rows, column))
        return None if n >= minimum else f"{n} {what} < {minimum}"

    return need


def span(column: str, factor: float, what: str) -> Need:
    """The values of ``column`` span at least ``factor`` (largest / smallest), e.g. depths over 8x."""

    def need(rows: pd.DataFrame) -> str | None:
        values = [v for v in _distinct(rows, column) if v > 0]
        ratio = values[-1] / values[0] if values else 0.0
        return None if ratio >= factor else f"{what} span {ratio:g}x < {factor:g}x"

    return need


def device_in(kinds: Sequence[str], what: str) -> Need:
    """Every trial ran on a device of one of ``kinds`` (e.g. a speed claim made for accelerators)."""

    def need(rows: pd.DataFrame) -> str | None:
        found = set(_distinct(rows, "device_kind"))
        return (
            None
            if found and found <= set(kinds)
            else f"ran on {', '.join(sorted(found)) or 'no device'}; the claim needs {what}"
        )

    return need


@dataclasses.dataclass(frozen=True)
class Interval:
    """The mean of paired differences with a bootstrap confidence interval."""

    mean: float
    low: float
    high: float
    n: int
    confidence: float = 0.95

    def above(self, threshold: float = 0.0) -> bool:
        """The whole interval lies above ``threshold``."""
        return self.low > threshold

    def below(self, threshold: float = 0.0) -> bool:
        """The whole interval lies below ``threshold``."""
        return self.high < threshold

    def side(self, claim: Literal["above", "below"], threshold: float = 0.0) -> bool | Literal["too small to decide"]:
        """True when the whole interval lies on the claimed side of ``threshold``, False when it lies wholly on
        the other side, ``UNDECIDED`` when it contains the threshold."""
        on_claimed = self.above(threshold) if claim == "above" else self.below(threshold)
        on_other = self.below(threshold) if claim == "above" else self.above(threshold)
        return True if on_claimed else False if on_other else UNDECIDED

    def text(self, fmt: str = "+.3g") -> str:
        """E.g. ``+0.012 [+0.004, +0.020] (95% CI, 5 pairs)``."""
        return (
            f"{self.mean:{fmt}} [{self.low:{fmt}}, {self.high:{fmt}}] "
            f"({self.confidence:.0%} CI, {self.n} pair{'s' if self.n != 1 else ''})"
        )


def all_hold(outcomes: Iterable[bool | Literal["too small to decide"]]) -> bool | Literal["too small to decide"]:
    """Several outcomes as one: False if any is False, ``UNDECIDED`` if any is undecided, else True."""
    seen = list(outcomes)
    return False if False in seen else UNDECIDED if UNDECIDED in seen else True


def paired_interval(
    a: Sequence[float], b: Sequence[float], *, confidence: float = 0.95, resamples: int = 10_000
) -> Interval:
    """Mean of ``a - b`` over pairs (same seed, same configuration) and its percentile bootstrap interval.

    Seeded, so a table gives the same interval every time. With one pair the interval is that pair.
    """
    diffs = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if diffs.ndim != 1 or diffs.size == 0:
        raise ValueError(f"paired_interval needs two equal-length non-empty sequences, got {len(a)} and {len(b)}")
    rng = np.random.default_rng(0)
    means = diffs[rng.integers(0, diffs.size, size=(resamples, diffs.size))].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return Interval(float(diffs.mean()), float(low), float(high), int(diffs.size), confidence)


def pairs(
    rows: pd.DataFrame,
    column: str,
    first: object,
    second: object,
    *,
    on: Sequence[str] = ("seed",),
    value: str = "value",
) -> pd.DataFrame:
    """``value`` of the rows with ``column == first`` beside those with ``column == second``, joined on ``on``.

    Columns ``first`` and ``second`` of the result hold the two values of each pair.
    """
    keys = list(on)
    a = rows[rows[column] == first][keys + [value]].rename(columns={value: "first"})
    b = rows[rows[column] == second][keys + [value]].rename(columns={value: "second"})
    return a.merge(b, on=keys)


__all__ = [
    "UNDECIDED",
    "VERDICTS",
    "Check",
    "Interval",
    "Need",
    "Test",
    "Verdict",
    "all_hold",
    "at_least",
    "decide",
    "device_in",
    "distinct",
    "not_measured",
    "paired_interval",
    "pairs",
    "seeds",
    "span",
]
