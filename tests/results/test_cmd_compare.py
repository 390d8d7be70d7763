"""``deeperbench compare``: every workload that records the metric, each ``--by`` column, each
``--format``, a baseline with the ``--fail-above`` gate, and bad input as one line with exit 2."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

import pytest
from typer.testing import CliRunner

import workloads
from core.trial import Outcome
from core.workload import Record
from harness.cli import app
from harness.sweep import make_trial
from results.compare import BY, FORMATS, _summary, against_baseline, by_columns, compare
from results.store import Store

FACTORS = (0.9, 1.0, 5.0)
"""Three timing samples per trial: the median is the middle one, the outlier does not count."""


def write(
    out,
    workload: str,
    seconds: dict[str, float],
    *,
    metric: str = "time_s",
    tag: str | None = None,
    repeats: int = 3,
    **params,
) -> None:
    """Trials of ``workload`` (its smoke parameters, ``params`` over them) that took ``seconds[backend]``."""
    wl = workloads.get(workload)
    point = wl.Params.model_validate(wl.smoke.model_dump() | params).model_dump(mode="json")
    store = Store(str(out))
    now = dt.datetime.now(dt.timezone.utc)
    for backend, base in seconds.items():
        for repeat in range(repeats):
            trial = make_trial(wl, backend, point, sweep="c", repeat=repeat, timeout_s=60)
            value = base * (1 + 0.01 * repeat)
            records = [Record(metric, value * f, sample=i, tag=tag) for i, f in enumerate(FACTORS)]
            store.write(trial, Outcome("ok", records, now, 0.1, "h", f"{backend}-cpu"), "r")


@pytest.fixture
def two_workloads(tmp_path):
    """``time_s`` recorded by device_roofline (two sizes) and topk_runtime (tagged), on torch and jax."""
    write(tmp_path, "device_roofline", {"torch": 2.0, "jax": 1.0}, n=64)
    write(tmp_path, "device_roofline", {"torch": 4.0, "jax": 2.0}, n=128)
    write(tmp_path, "topk_runtime", {"torch": 3.0, "jax": 6.0}, tag="forward")
    return tmp_path


def invoke(*args: str):
    return CliRunner().invoke(app, ["compare", *args])


def test_by_backend_gives_medians_and_the_ratio(tmp_path):
    write(tmp_path, "harness_probe", {"torch": 2.0, "jax": 1.0}, metric="trial_s")
    c = compare(str(tmp_path), "trial_s")
    row = c.table.iloc[0]
    assert c.declared["harness_probe"].direction == "lower"
    assert abs(row["jax"] - 1.01) < 1e-9 and abs(row["torch"] - 2.02) < 1e-9  # median of samples, then of repeats
    assert abs(row["torch/jax"] - 2.0) < 1e-9
    assert row["workload"] == "harness_probe"


def test_a_metric_recorded_by_two_workloads_lists_both(two_workloads):
    result = invoke(str(two_workloads), "--metric", "time_s", "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert sorted({r["workload"] for r in rows}) == ["device_roofline", "topk_runtime"]
    assert len(rows) == 3  # two roofline sizes and one top-k configuration, none hidden
    topk = next(r for r in rows if r["workload"] == "topk_runtime")
    assert abs(float(topk["torch"]) - 3.03) < 1e-9 and abs(float(topk["torch/jax"]) - 0.5) < 1e-9
    only = invoke(str(two_workloads), "--metric", "time_s", "--workload", "topk_runtime", "--format", "csv")
    assert only.exit_code == 0 and {r["workload"] for r in csv.DictReader(io.StringIO(only.stdout))} == {"topk_runtime"}


def test_every_by_column_offered_works(two_workloads):
    summary, _ = _summary(str(two_workloads), "time_s", None)
    offered = by_columns(summary)
    assert set(BY) <= set(offered) and "p_n" in offered
    for by in offered:
        result = invoke(str(two_workloads), "--metric", "time_s", "--by", by, "--format", "json")
        assert result.exit_code == 0, (by, result.output)
        shown = json.loads(result.stdout)
        expected = {str(int(v)) if isinstance(v, float) and v.is_integer() else str(v) for v in summary[by].dropna()}
        assert expected <= set(shown["values"]), (by, shown["values"])
        assert len(shown["ratios"]) == len(shown["values"]) - 1
        assert sum(1 for r in shown["rows"] for v in shown["values"] if r.get(v) is not None) == len(summary)
    by_size = json.loads(invoke(str(two_workloads), "--metric", "time_s", "--by", "n", "--format", "json").stdout)
    roofline = [r for r in by_size["rows"] if r["workload"] == "device_roofline"]
    assert {round(r["128/64"], 9) for r in roofline} == {2.0}  # each backend twice as slow at n=128


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_shows_both_workloads_and_the_title_verbatim(two_workloads, fmt):
    result = invoke(str(two_workloads), "--metric", "time_s", "--format", fmt)
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "device_roofline" in text and "topk_runtime" in text
    if fmt == "json":
        assert json.loads(text)["title"].startswith("time_s [s], lower is better")
    elif fmt == "csv":
        assert text.splitlines()[0] == "workload,device_kind,config,tag,jax,torch,torch/jax"
    else:
        assert "time_s [s]" in text  # not eaten as rich markup
    if fmt == "markdown":
        table = [line for line in text.splitlines() if line.startswith("|")]
        assert table[1].startswith("| ---") and len(table) == 2 + 3


@pytest.mark.parametrize(
    "args, expected",
    [
        (
            ["--by", "nosuchcol"],
            "--by: no column 'nosuchcol'.*allowed: backend, device_kind, device_name, workload, tag",
        ),
        (["--format", "xml"], "--format: unknown format 'xml'; allowed: table, markdown, csv, json"),
        (["--workload", "memory_depth"], "--workload: no results of 'memory_depth' here; allowed: device_roofline"),
        (["--metric", "tme_s"], "--metric: 'tme_s' is not a metric .*did you mean 'time_s'"),
        (["--fail-above", "1.1"], "--fail-above: needs --baseline"),
    ],
)
def test_bad_input_exits_2_with_one_line(two_workloads, args, expected):
    import re

    base = ["--metric", "time_s"] if "--metric" not in args else []
    result = invoke(str(two_workloads), *base, *args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and re.search(expected, lines[0]), result.stderr
    assert "Traceback" not in result.output


def test_an_empty_folder_exits_2(tmp_path):
    result = invoke(str(tmp_path), "--metric", "time_s")
    assert result.exit_code == 2 and "no results under" in result.stderr


def test_against_a_baseline_and_the_fail_above_gate(tmp_path):
    write(tmp_path / "old", "harness_probe", {"torch": 1.0, "jax": 1.0}, metric="trial_s")
    write(tmp_path / "new", "harness_probe", {"torch": 1.5, "jax": 1.0}, metric="trial_s")
    c = against_baseline(str(tmp_path / "new"), str(tmp_path / "old"), "trial_s")
    ratios = dict(zip(c.table["backend"], c.table["ratio"]))
    assert abs(ratios["torch"] - 1.5) < 1e-9 and abs(ratios["jax"] - 1.0) < 1e-9
    args = [str(tmp_path / "new"), "--metric", "trial_s", "--baseline", str(tmp_path / "old")]
    assert invoke(*args, "--fail-above", "1.2").exit_code == 1
    assert invoke(*args, "--fail-above", "1.6").exit_code == 0
    shown = invoke(str(tmp_path / "new"), "--metric", "trial_s")
    assert shown.exit_code == 0 and "lower is better" in shown.stdout and "torch/jax" in shown.stdout
