"""``deeperbench compare``: ratios by backend, against a baseline run, and the --fail-above gate."""
from __future__ import annotations

import datetime as dt

from typer.testing import CliRunner

import workloads
from harness.cli import app
from harness.spec import Sweep
from harness.sweep import expand
from harness.trial import Outcome
from harness.workload import Record
from results.compare import against_baseline, by_backend
from results.store import Store


def write_run(out, seconds: dict[str, float]) -> None:
    """A store whose probe trials took ``seconds[backend]`` (three repeats, three samples each)."""
    store = Store(str(out))
    sweep = Sweep(name="c", workload="harness_probe", backends=["torch", "jax"], grid={"mode": "noop"}, repeats=3)
    for trial in expand(sweep, workloads.get("harness_probe"), device="cpu"):
        base = seconds[trial.backend] * (1 + 0.01 * trial.repeat)
        records = [Record("trial_s", base * f, sample=i) for i, f in enumerate((0.9, 1.0, 5.0))]
        store.write(trial, Outcome("ok", records, dt.datetime.now(dt.timezone.utc), 0.1, "h", "cpu"), "r")


def test_by_backend_gives_medians_and_the_ratio(tmp_path):
    write_run(tmp_path, {"torch": 2.0, "jax": 1.0})
    table, metric = by_backend(str(tmp_path), "trial_s")
    row = table.iloc[0]
    assert metric.direction == "lower"
    assert abs(row["jax"] - 1.01) < 1e-9 and abs(row["torch"] - 2.02) < 1e-9  # median of samples, then of repeats
    assert abs(row["torch/jax"] - 2.0) < 1e-9


def test_against_a_baseline_and_the_fail_above_gate(tmp_path):
    write_run(tmp_path / "old", {"torch": 1.0, "jax": 1.0})
    write_run(tmp_path / "new", {"torch": 1.5, "jax": 1.0})
    joined, _ = against_baseline(str(tmp_path / "new"), str(tmp_path / "old"), "trial_s")
    ratios = dict(zip(joined["backend"], joined["ratio"]))
    assert abs(ratios["torch"] - 1.5) < 1e-9 and abs(ratios["jax"] - 1.0) < 1e-9
    runner = CliRunner()
    args = ["compare", str(tmp_path / "new"), "--metric", "trial_s", "--baseline", str(tmp_path / "old")]
    assert runner.invoke(app, args + ["--fail-above", "1.2"]).exit_code == 1
    assert runner.invoke(app, args + ["--fail-above", "1.6"]).exit_code == 0
    shown = runner.invoke(app, ["compare", str(tmp_path / "new"), "--metric", "trial_s"])
    assert shown.exit_code == 0 and "lower is better" in shown.stdout and "torch/jax" in shown.stdout
