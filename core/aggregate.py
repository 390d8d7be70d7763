"""Summaries: each trial's samples reduced as its metric declares, then median and IQR over repeats.

Both steps are vectorised over groups: the rows are factorised once (``groupby(...).ngroup()``), and
groups of equal size are stacked into one 2-D array that numpy reduces along its rows. The numbers
are those of reducing each group on its own (``np.median``, ``Series.quantile``, ...), bit for bit,
at a cost that no longer grows with a Python loop over 10^5 trials.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from core.workload import Metric, Record

TRIAL_COLUMNS = ["workload", "backend", "device_kind", "device_name", "params", "repeat", "trial_key"]
"""What identifies a trial's rows; ``params`` excludes the repeat, so repeats group together."""


def ok_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of finished trials that carry a value."""
    return df[(df["status"] == "ok") & df["metric"].notna()]


def reduce_records(records: Sequence[Record], metric: Metric) -> float | None:
    """One trial's value of ``metric`` from its records, reduced as declared (None if not recorded).

    Records with several tags (layers, parameter tensors) are reduced together.
    """
    rows = sorted(
        (r for r in records if r.metric == metric.name),
        key=lambda r: (r.step if r.step is not None else -1, r.sample if r.sample is not None else -1),
    )
    return _reduce(pd.Series([r.value for r in rows]), metric.reduce) if rows else None


def _reduce(values: pd.Series, how: str) -> float:
    reducers: dict[str, Callable[[pd.Series], Any]] = {
        "median": np.median,
        "last": lambda v: v.iloc[-1],
        "max": np.max,
        "min": np.min,
        "mean": np.mean,
    }
    return float(reducers[how](values))


def _nanmean(stack: np.ndarray) -> np.ndarray:
    """Row means skipping NaN, summed as ``Series.mean`` sums (NaN as 0, then divided by the count)."""
    count = (~np.isnan(stack)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, np.where(np.isnan(stack), 0.0, stack).sum(axis=1) / count, np.nan)


_ROW_REDUCTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "median": lambda s: np.median(s, axis=1),  # NaN in a trial gives NaN, as np.median of its values does
    "max": lambda s: np.fmax.reduce(s, axis=1),  # NaN skipped, as Series.max
    "min": lambda s: np.fmin.reduce(s, axis=1),
    "mean": _nanmean,
}
"""Per reduction, what it does to the rows of a stack of equal-size groups (``last`` is taken by position)."""


class _Groups:
    """Row groups of a frame as integer codes: each group's rows in their original order, contiguous.

    Args:
        codes: int array (rows,), the group of each row, numbered 0.. in order of first appearance.
    """

    def __init__(self, codes: np.ndarray) -> None:
        self.order = np.argsort(codes, kind="stable")
        self.counts = np.bincount(codes)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)

    @property
    def first(self) -> np.ndarray:
        """Position of each group's first row."""
        return self.order[self.starts]

    @property
    def last(self) -> np.ndarray:
        """Position of each group's last row."""
        return self.order[self.starts + self.counts - 1]

    def reduce(self, values: np.ndarray, groups: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """``fn`` of each group in ``groups``: groups of equal size stacked into one (groups, size) array."""
        ordered = values[self.order]
        out = np.empty(len(groups))
        sizes = self.counts[groups]
        for size in np.unique(sizes):
            chosen = sizes == size
            out[chosen] = fn(ordered[self.starts[groups[chosen]][:, None] + np.arange(size)])
        return out


def _quantiles(codes: np.ndarray, values: np.ndarray, n_groups: int, qs: Sequence[float]) -> np.ndarray:
    """Linear-interpolation quantiles of each group's non-NaN values (as ``Series.quantile``), NaN for none.

    Returns:
        float array (len(qs), n_groups).
    """
    out = np.full((len(qs), n_groups), np.nan)
    present = ~np.isnan(values)
    if not present.any():
        return out
    codes, values = codes[present], values[present]
    groups = _Groups(codes)
    have = np.flatnonzero(groups.counts)
    ordered = values[groups.order]
    sizes = groups.counts[have]
    for size in np.unique(sizes):
        chosen = have[sizes == size]
        out[:, chosen] = np.quantile(ordered[groups.starts[chosen][:, None] + np.arange(size)], list(qs), axis=1)
    return out


def reduce_trials(df: pd.DataFrame, metrics: Sequence[Metric], *, by_step: bool = False) -> pd.DataFrame:
    """One value per trial, metric and tag (and step with ``by_step``), reduced as the metric declares.

    ``last`` takes the value at the largest step (then the last sample); the others reduce over
    every sample and step.
    """
    how = {m.name: m.reduce for m in metrics}
    rows = ok_rows(df)
    rows = rows[rows["metric"].isin(how)].sort_values(["step", "sample"], na_position="first", kind="stable")
    keys = TRIAL_COLUMNS + ["metric", "tag"] + (["step"] if by_step else [])
    carried = [c for c in rows.columns if c.startswith("p_")] + ["unit"]
    columns = keys + ["value"] + carried
    if rows.empty:
        return _inferred(rows, columns)
    groups = _Groups(rows.groupby(keys, dropna=False, sort=False).ngroup().to_numpy())
    first = groups.first
    reductions = rows["metric"].to_numpy(dtype=object)[first]
    reductions = np.array([how[m] for m in reductions], dtype=object)
    values = rows["value"].to_numpy(dtype=float)
    reduced = np.empty(len(first))
    for kind in dict.fromkeys(reductions):
        chosen = np.flatnonzero(reductions == kind)
        if kind == "last":
            reduced[chosen] = values[groups.last[chosen]]
        else:
            reduced[chosen] = groups.reduce(values, chosen, _ROW_REDUCTIONS[kind])
    return _inferred(rows.iloc[first], columns, value=reduced)


def _inferred(frame: pd.DataFrame, columns: list[str], value: np.ndarray | None = None) -> pd.DataFrame:
    """``frame[columns]`` rebuilt from Python values (``value`` replacing its column when given).

    The dtypes are then inferred from the rows present, as for a frame built row by row: a column
    null in every row is float, a flag with nulls object; so a summary's columns do not depend on
    which other rows the frame was cut from.
    """
    if frame.empty:
        return pd.DataFrame(columns=columns)
    return pd.DataFrame(
        {c: value if c == "value" and value is not None else frame[c].tolist() for c in columns}, columns=columns
    )


def select(df: pd.DataFrame, where: dict[str, Any]) -> pd.DataFrame:
    """The rows of ``df`` whose columns equal the values of ``where`` (a list, tuple or set: any of them)."""
    for column, value in where.items():
        df = df[df[column].isin(list(value)) if isinstance(value, (list, tuple, set)) else df[column] == value]
    return df


def summarize(df: pd.DataFrame, metrics: Sequence[Metric], *, by_step: bool = False) -> pd.DataFrame:
    """Median, 25th and 75th percentiles and count over repeats, per configuration, metric and tag."""
    return _over_repeats(reduce_trials(df, metrics, by_step=by_step), by_step=by_step)


class Summaries:
    """The summaries of one workload's rows, each trial reduced once and shared by every figure and table.

    ``summarize(metrics, by_step=..., where=...)`` equals ``summarize(select(rows, where), metrics,
    by_step=...)`` exactly: the per-trial values of every declared metric are computed once per
    ``by_step``, then cut to the metrics and ``where`` asked for (a trial's rows agree on each column
    ``where`` may name here). A ``where`` on a column that is not kept per trial reduces afresh.

    Args:
        rows: the workload's rows as the store reads them.
        metrics: every metric the workload declares.
    """

    def __init__(self, rows: pd.DataFrame, metrics: Sequence[Metric]) -> None:
        self.rows = rows
        self.metrics = tuple(metrics)
        self._per_trial: dict[bool, pd.DataFrame] = {}

    def summarize(
        self, metrics: Sequence[Metric], *, by_step: bool = False, where: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Median, IQR and count over repeats of ``metrics`` in the rows matching ``where``."""
        where = dict(where or {})
        if by_step not in self._per_trial:
            self._per_trial[by_step] = reduce_trials(self.rows, self.metrics, by_step=by_step)
        per_trial = self._per_trial[by_step]
        if any(c not in per_trial.columns for c in where) or not set(metrics) <= set(self.metrics):
            return summarize(select(self.rows, where), metrics, by_step=by_step)
        names = [m.name for m in metrics]
        cut = select(per_trial[per_trial["metric"].isin(names)], where)
        whole = len(cut) == len(per_trial)  # every trial kept: its dtypes are already those of these rows
        return _over_repeats(per_trial if whole else _inferred(cut, list(per_trial.columns)), by_step=by_step)


def _over_repeats(per_trial: pd.DataFrame, *, by_step: bool) -> pd.DataFrame:
    """Median, 25th and 75th percentiles and count of per-trial values over repeats."""
    pcols = [c for c in per_trial.columns if c.startswith("p_")]
    keys = ["backend", "device_kind", "device_name", "params", "metric", "tag"] + (["step"] if by_step else [])
    grouped = per_trial.groupby(keys, dropna=False, sort=False)
    table = grouped.agg(
        median=("value", "median"),
        n=("value", "size"),
        unit=("unit", "first"),
        **{c: (c, "first") for c in pcols},
    ).reset_index()
    q25, q75 = _quantiles(
        grouped.ngroup().to_numpy(), per_trial["value"].to_numpy(dtype=float), len(table), (0.25, 0.75)
    )
    at = table.columns.get_loc("median") + 1
    table.insert(at, "q25", q25)
    table.insert(at + 1, "q75", q75)
    return table
