"""Summaries: the vectorised group-bys of ``core.aggregate`` against a per-group reference, value for value."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from core.aggregate import Summaries, reduce_records, reduce_trials, select, summarize
from core.workload import Metric, Record

METRICS = (
    Metric("time_s", "s", "lower", "median", "timing samples"),
    Metric("loss", "1", "lower", "last", "value at the last step"),
    Metric("peak_bytes", "B", "lower", "max", "peak"),
    Metric("best", "1", "higher", "min", "smallest"),
    Metric("rate", "1/s", "higher", "mean", "mean"),
)
KEYS = ["workload", "backend", "device_kind", "device_name", "params", "repeat", "trial_key"]


def reference_reduce(df: pd.DataFrame, metrics, *, by_step: bool = False) -> pd.DataFrame:
    """One Python reduction per trial group, as core.aggregate did before it was vectorised."""
    how = {m.name: m.reduce for m in metrics}
    funcs = {"median": np.median, "last": lambda v: v.iloc[-1], "max": np.max, "min": np.min, "mean": np.mean}
    rows = df[(df["status"] == "ok") & df["metric"].notna()]
    rows = rows[rows["metric"].isin(how)].sort_values(["step", "sample"], na_position="first", kind="stable")
    keys = KEYS + ["metric", "tag"] + (["step"] if by_step else [])
    carried = [c for c in rows.columns if c.startswith("p_")] + ["unit"]
    out = []
    for key, group in rows.groupby(keys, dropna=False, sort=False):
        rec = dict(zip(keys, key))
        rec["value"] = float(funcs[how[rec["metric"]]](group["value"]))
        rec |= {c: group[c].iloc[0] for c in carried}
        out.append(rec)
    return pd.DataFrame(out, columns=keys + ["value"] + carried)


def reference_summary(df: pd.DataFrame, metrics, *, by_step: bool = False) -> pd.DataFrame:
    per_trial = reference_reduce(df, metrics, by_step=by_step)
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


def frame(seed: int, trials: int = 300) -> pd.DataFrame:
    """Rows of ``trials`` trials over few configurations: ties, NaN values, one-sample groups, steps and tags."""
    rng = np.random.default_rng(seed)
    units = {m.name: m.unit for m in METRICS}
    rows = []
    for t in range(trials):
        depth = int(rng.choice([2, 4, 8]))
        backend = str(rng.choice(["torch", "jax"]))
        params = json.dumps({"depth": depth})
        status = "ok" if rng.random() > 0.05 else "failed"
        base = dict(
            workload="w",
            backend=backend,
            device_kind="cpu",
            device_name=None if rng.random() < 0.2 else "cpu0",
            params=params,
            repeat=t // 30,
            trial_key=f"k{t}",
            status=status,
            p_depth=depth,
            p_train=None if depth == 2 else bool(depth == 4),
        )
        for metric in rng.choice([m.name for m in METRICS], size=int(rng.integers(1, 4)), replace=False):
            for r in range(int(rng.integers(1, 7))):  # one sample, or several
                value = float(rng.choice([0.5, 1.0, 1.0, 2.0, rng.normal()]))  # ties on purpose
                if rng.random() < 0.05:
                    value = float("nan")
                step = None if metric in ("time_s", "peak_bytes") else float(r // 2)
                rows.append(
                    base
                    | dict(
                        metric=metric,
                        value=value,
                        unit=units[metric],
                        step=step,
                        sample=r,
                        tag=None if rng.random() < 0.7 else str(rng.choice(["a", "b"])),
                    )
                )
        if status == "failed":
            rows.append(base | dict(metric=None, value=None, unit=None, step=None, sample=None, tag=None))
    return pd.DataFrame(rows)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("by_step", [False, True])
def test_summaries_equal_a_per_group_reference_bit_for_bit_with_ties_nan_and_single_samples(seed, by_step):
    df = frame(seed)
    assert (df.groupby("trial_key").size() == 1).any() and df["value"].isna().any()
    got, want = reduce_trials(df, METRICS, by_step=by_step), reference_reduce(df, METRICS, by_step=by_step)
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    got, want = summarize(df, METRICS, by_step=by_step), reference_summary(df, METRICS, by_step=by_step)
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    assert (got["n"] == 1).any() and got["q25"].notna().any()


def test_a_subset_of_metrics_summarises_only_those():
    df = frame(3)
    got = summarize(df, METRICS[:2])
    pd.testing.assert_frame_equal(got, reference_summary(df, METRICS[:2]), check_exact=True)
    assert set(got["metric"]) == {"time_s", "loss"}


def test_quantiles_interpolate_linearly_and_skip_nan_but_count_every_trial():
    """Closed form: of 1, 2, 3, 4 the 25th percentile is 1.75 and the 75th 3.25; a NaN trial counts in n only."""
    rows = [
        dict(repeat=r, trial_key=f"k{r}", value=v, params="{}", sample=0)
        for r, v in enumerate([4.0, 1.0, 3.0, 2.0, float("nan")])
    ] + [dict(repeat=0, trial_key="single", value=7.0, params='{"x": 1}', sample=0)]
    df = pd.DataFrame(rows).assign(
        workload="w", backend="torch", device_kind="cpu", device_name="c", status="ok", metric="time_s", unit="s"
    )
    df["step"], df["tag"] = np.nan, None
    got = summarize(df, METRICS[:1]).set_index("params")
    assert got.loc["{}", ["median", "q25", "q75", "n"]].tolist() == [2.5, 1.75, 3.25, 5]
    assert got.loc['{"x": 1}', ["median", "q25", "q75", "n"]].tolist() == [7.0, 7.0, 7.0, 1]


def test_each_reduction_of_a_trial_matches_its_records():
    """A trial's samples reduced as declared, in the store's order (by step, then sample), as reduce_records."""
    values = [3.0, 1.0, 2.0, 5.0, 4.0]
    records = [Record("x", v, step=s, sample=i) for i, (v, s) in enumerate(zip(values, [0, 2, 1, 2, 0]))]
    for reduce, want in (("median", 3.0), ("last", 5.0), ("max", 5.0), ("min", 1.0), ("mean", 3.0)):
        metric = Metric("x", "1", "lower", reduce, "")
        df = pd.DataFrame(
            [
                dict(
                    workload="w",
                    backend="jax",
                    device_kind="cpu",
                    device_name="c",
                    params="{}",
                    repeat=0,
                    trial_key="k",
                    status="ok",
                    metric="x",
                    unit="1",
                    value=r.value,
                    step=float(r.step),
                    sample=r.sample,
                    tag=None,
                )
                for r in records
            ]
        )
        assert reduce_trials(df, [metric])["value"].tolist() == [want] == [reduce_records(records, metric)]


def test_no_finished_trial_gives_an_empty_summary_with_the_columns():
    df = frame(4).assign(status="failed")
    got = summarize(df, METRICS)
    assert got.empty and {"median", "q25", "q75", "n", "unit"} <= set(got.columns)


@pytest.mark.parametrize("by_step", [False, True])
def test_shared_summaries_equal_summarising_each_figures_rows_afresh(by_step):
    """Each trial reduced once for a whole report section, then cut: the same frames as summarising each cut."""
    df = frame(5)
    shared = Summaries(df, METRICS)
    for metrics, where in (
        (METRICS, {}),
        (METRICS[:1], {}),
        (METRICS[1:3], {"p_depth": [2, 8]}),
        (METRICS, {"p_depth": 4, "backend": "jax"}),
        (METRICS[2:], {"tag": "a"}),
        (METRICS, {"sample": 0}),  # not kept per trial: reduced afresh
        (METRICS, {"p_depth": 16}),  # nothing left
    ):
        got = shared.summarize(metrics, by_step=by_step, where=where)
        want = summarize(select(df, where), metrics, by_step=by_step)
        pd.testing.assert_frame_equal(got, want, check_exact=True)
    assert len(shared.summarize(METRICS, by_step=by_step)) > len(shared.summarize(METRICS[:1], by_step=by_step)) > 0
