"""Summaries: each trial's samples reduced as its metric declares, then median and IQR over repeats."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from harness.workload import Metric, Record

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
    return float(
        {"median": np.median, "last": lambda v: v.iloc[-1], "max": np.max, "min": np.min, "mean": np.mean}[how](values)
    )


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
    out = []
    for key, group in rows.groupby(keys, dropna=False, sort=False):
        rec = dict(zip(keys, key))
        rec["value"] = _reduce(group["value"], how[rec["metric"]])
        rec |= {c: group[c].iloc[0] for c in carried}
        out.append(rec)
    return pd.DataFrame(out, columns=keys + ["value"] + carried)


def summarize(df: pd.DataFrame, metrics: Sequence[Metric], *, by_step: bool = False) -> pd.DataFrame:
    """Median, 25th and 75th percentiles and count over repeats, per configuration, metric and tag."""
    per_trial = reduce_trials(df, metrics, by_step=by_step)
    pcols = [c for c in per_trial.columns if c.startswith("p_")]
    keys = ["backend", "device_kind", "device_name", "params", "metric", "tag"] + (["step"] if by_step else [])
    return (
        per_trial.groupby(keys, dropna=False, sort=False)
        .agg(
            median=("value", "median"),
            q25=("value", lambda v: v.quantile(0.25)),
            q75=("value", lambda v: v.quantile(0.75)),
            n=("value", "size"),
            unit=("unit", "first"),
            **{c: (c, "first") for c in pcols},
        )
        .reset_index()
    )
