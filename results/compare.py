"""``deeperbench compare``: a metric by backend (or against a baseline run) as ratios, in the terminal."""
from __future__ import annotations

import json

import pandas as pd

import workloads
from harness.errors import UserError
from harness.registry import did_you_mean
from harness.workload import Metric
from results.aggregate import summarize
from results.store import Store


def _metric(df: pd.DataFrame, name: str) -> tuple[str, Metric]:
    """The workload that declares metric ``name`` among those in ``df``, and the metric."""
    known: dict[str, tuple[str, Metric]] = {}
    for wl in df["workload"].dropna().unique():
        if wl in workloads.REGISTRY:
            known |= {m.name: (wl, m) for m in workloads.get(wl).metrics}
    if name not in known:
        names = sorted(known)
        raise UserError(f"--metric: '{name}' is not a metric of the results here; allowed: {', '.join(names)}"
                        f"{did_you_mean(name, names)}")
    return known[name]


def _summary(out: str, metric: str) -> tuple[pd.DataFrame, Metric]:
    df = Store(out).read().to_pandas()
    if df.empty:
        raise UserError(f"DIR: no results under '{out}'")
    workload, m = _metric(df, metric)
    summary = summarize(df[df["workload"] == workload], [m])
    summary = summary[summary["metric"] == metric].copy()
    summary["config"] = summary["params"].map(lambda p: ", ".join(f"{k}={v}" for k, v in json.loads(p).items()))
    return summary, m


def by_backend(out: str, metric: str, by: str = "backend") -> tuple[pd.DataFrame, Metric]:
    """Median of ``metric`` per configuration and value of ``by``, with each value's ratio to the first."""
    summary, m = _summary(out, metric)
    wide = summary.pivot_table(index=["device_kind", "config", "tag"], columns=by, values="median",
                               aggfunc="first", dropna=False).reset_index()
    values = sorted(summary[by].dropna().unique())
    for other in values[1:]:
        wide[f"{other}/{values[0]}"] = wide[other] / wide[values[0]]
    return wide, m


def against_baseline(out: str, baseline: str, metric: str) -> tuple[pd.DataFrame, Metric]:
    """Median of ``metric`` here and in ``baseline`` per backend and configuration, and their ratio."""
    now, m = _summary(out, metric)
    before, _ = _summary(baseline, metric)
    keys = ["backend", "device_kind", "config", "tag"]
    joined = now[keys + ["median"]].merge(before[keys + ["median"]], on=keys, suffixes=("", "_baseline"))
    joined["ratio"] = joined["median"] / joined["median_baseline"]
    return joined, m


def worse_than(ratios: pd.Series, metric: Metric, threshold: float) -> pd.Series:
    """Which ratios (this / baseline) are worse than ``threshold`` in the metric's direction."""
    return ratios > threshold if metric.direction == "lower" else ratios < 1.0 / threshold
