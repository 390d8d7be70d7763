"""``deeperbench search``: Optuna ask/tell over Ray, a real SQLite study, resume, failures, constraints."""

from __future__ import annotations

import pathlib
import textwrap

import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from core.errors import UserError
from harness.cli import app
from harness.search import run_search
from results.report import build
from results.store import Store

SPEC = """
name: probe-search
workload: harness_probe
backends: [torch]
resources: {{cpus: 1}}
grid: {{sleep_s: 0.05}}
search:
  metric: trial_s
  direction: minimize
  space: {{mode: {modes}, index: {{low: 0, high: 3, int: true}}}}
{extra}
"""


def spec(tmp_path, modes="[sleep]", extra=""):
    path = tmp_path / "search.yaml"
    path.write_text(textwrap.dedent(SPEC.format(modes=modes, extra=extra)))
    return str(path)


def study_of(out):
    return optuna.load_study(study_name="probe-search", storage=f"sqlite:///{out}/optuna.db")


@pytest.mark.timeout(240)
def test_search_runs_in_parallel_stores_every_trial_and_resumes(tmp_path, ray_instance):
    out = str(tmp_path / "out")
    first = run_search(spec(tmp_path), 3, out, parallel=2)
    assert first.finished == 3 and first.asked_now == 3
    rows = Store(out).read().to_pylist()
    assert sorted(r["trial_number"] for r in rows) == [0, 1, 2]
    assert len({r["trial_key"] for r in rows}) == 3  # same parameters drawn twice are still two trials
    assert {r["study"] for r in rows} == {"probe-search"}
    study_of(out).ask()  # a trial an interrupted run left RUNNING
    again = run_search(spec(tmp_path), 5, out, parallel=2)
    states = [t.state for t in study_of(out).trials]
    assert len(states) == 5 and states[3] == TrialState.FAIL and again.asked_now == 1
    assert again.finished == 4
    assert len(Store(out).read().to_pylist()) == 4
    path, n_figs = build(out, str(tmp_path / "report.html"))
    text = pathlib.Path(path).read_text()
    assert "Searches (Optuna)" in text and "Best trial" in text and n_figs >= 3


@pytest.mark.timeout(240)
def test_failed_trials_are_told_failed_and_constraints_pick_the_best_feasible(tmp_path, ray_instance):
    out = str(tmp_path / "out")
    extra = "  constraints: [{metric: trial_s, min: 1.0}]"
    s = run_search(spec(tmp_path, modes="[sleep, raise]", extra=extra), 6, out, parallel=2)
    study = study_of(out)
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert failed and all(t.params["mode"] == "raise" for t in failed)
    assert all(t.params["mode"] == "sleep" for t in complete)
    assert all(t.user_attrs["constraints"][0] > 0 for t in complete)  # 0.05 s < 1.0 s: infeasible
    assert s.best_number is None  # no trial meets the constraint, and the search says so
    statuses = {r["trial_number"]: r["status"] for r in Store(out).read().to_pylist()}
    assert {statuses[t.number] for t in failed} == {"failed"}


def test_a_search_spec_must_fix_every_grid_parameter(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(SPEC.format(modes="[sleep]", extra="").replace("sleep_s: 0.05", "sleep_s: [0.05, 0.1]"))
    with pytest.raises(UserError, match=r"grid\.sleep_s: a search fixes every grid parameter"):
        run_search(str(path), 2, str(tmp_path / "out"))


@pytest.mark.timeout(240)
def test_search_exits_1_when_a_trial_failed_and_0_with_allow_failures(tmp_path, ray_instance):
    path = spec(tmp_path, modes="[raise]")
    args = ["search", path, "--trials", "2", "--parallel", "2", "--out", str(tmp_path / "out")]
    failed = CliRunner().invoke(app, args)
    assert failed.exit_code == 1, failed.output
    assert failed.stdout.splitlines()[-1] == "2 trials run now: 2 failed"
    assert "Traceback" not in failed.output
    allowed = CliRunner().invoke(app, [*args[:3], "3", *args[4:], "--allow-failures"])
    assert allowed.exit_code == 0 and allowed.stdout.splitlines()[-1] == "1 trial run now: 1 failed"
    ok = spec(tmp_path, modes="[sleep]")
    done = CliRunner().invoke(app, ["search", ok, "--trials", "1", "--out", str(tmp_path / "ok")])
    assert done.exit_code == 0 and done.stdout.splitlines()[-1] == "1 trial run now: 1 ok", done.output
