"""Every registered workload, whatever it is, has the shape the harness needs, its smoke runs, and the report
can draw its figure declarations and state its checks."""

from __future__ import annotations

import pathlib
import re

import pyarrow as pa
import pytest

import backends
import workloads
from core.checks import VERDICTS, Check
from core.figures import Custom, Figure
from core.trial import Trial
from core.workload import settings
from harness.spec import load_specs
from harness.sweep import make_trial
from harness.trial import execute
from results import plots
from results.schema import BASE, param_fields
from results.store import trial_table

ROOT = pathlib.Path(__file__).resolve().parents[2]
SWEEPS = sorted((ROOT / "sweeps").glob("*.yaml"))


def smoke_trial(name: str, backend: str) -> Trial:
    return make_trial(workloads.get(name), backend, workloads.get(name).smoke, sweep="conf", num_cpus=2)


@pytest.mark.parametrize("name", workloads.names())
def test_workload_declares_a_complete_interface(name):
    wl = workloads.get(name)
    assert wl.name == name and isinstance(wl.version, int) and wl.backends
    assert set(wl.backends) <= set(backends.names())
    assert len({m.name for m in wl.metrics}) == len(wl.metrics)
    assert all(m.direction in ("lower", "higher") and m.unit for m in wl.metrics)
    assert wl.Params.model_config.get("extra") == "forbid" and wl.Params.model_config.get("frozen")
    with pytest.raises(Exception, match="Extra inputs"):
        wl.Params.model_validate({"no_such_parameter": 1})


SUMMARY_COLUMNS = {"backend", "device_kind", "device_name", "params", "metric", "tag", "step", "unit"}
"""Columns of ``core.aggregate.summarize`` besides the parameters (``step`` with ``by_step``)."""


@pytest.mark.parametrize("name", workloads.names())
def test_figures_and_settings_are_declarations_over_columns_the_rows_have(name):
    wl = workloads.get(name)
    params = {f.name for f in param_fields(wl)}
    metric_names = {m.name for m in wl.metrics}
    assert isinstance(wl.figures, tuple) and all(isinstance(f, (Figure, Custom)) for f in wl.figures)
    for fig in wl.figures:
        assert fig.title and (not fig.thesis or re.search(r"\d", fig.thesis)), f"{fig}: thesis names no number"
        if isinstance(fig, Custom):
            assert callable(fig.draw)
            continue
        assert set(fig.metrics) <= metric_names, f"{fig.title}: {set(fig.metrics) - metric_names} not declared"
        columns = [fig.x, *fig.series, *([fig.facet] if fig.facet else [])]
        assert set(columns) <= params | SUMMARY_COLUMNS, f"{fig.title}: {set(columns) - params - SUMMARY_COLUMNS}"
        assert fig.x != "step" or fig.by_step, f"{fig.title}: x=step needs by_step=True"
        assert set(fig.where) <= params | set(BASE.names), f"{fig.title}: where {set(fig.where) - params}"
        assert fig.kind != "box" or len(fig.metrics) == 5, f"{fig.title}: a box needs five metrics"
    for setting in settings(wl):
        assert setting.figure and setting.thesis
        assert set(setting.ours.values()) <= params | set(BASE.names), setting.figure
        assert set(setting.where) <= params | set(BASE.names), setting.figure


def test_smoke_sweep_covers_every_registered_workload():
    covered = {sweep.workload for sweep, _ in load_specs(ROOT / "sweeps" / "smoke.yaml")}
    assert covered == set(workloads.names())


@pytest.mark.parametrize("path", SWEEPS, ids=[p.name for p in SWEEPS])
def test_every_sweep_file_is_valid(path):
    assert load_specs(path)


@pytest.mark.parametrize("name", workloads.names())
def test_smoke_runs_on_every_backend_and_reports(name):
    """The smoke parameters run here, record only declared metrics, and feed figures and checks."""
    wl = workloads.get(name)
    tables = []
    for backend in wl.backends:
        trial = smoke_trial(name, backend)
        outcome = execute(trial)
        assert outcome.status in ("ok", "skipped"), outcome.error
        tables.append(trial_table(trial, outcome, "conformance"))
    df = pa.concat_tables(tables).to_pandas()
    assert set(df["metric"].dropna()) <= {m.name for m in wl.metrics}
    assert df["value"].notna().any()
    styles = plots.Styles()
    drawn = [plots.draw(declaration, df, wl.metrics, styles) for declaration in wl.figures]
    assert all(f is None or (f.data and f.layout.title.text) for f in drawn)
    assert not wl.figures or any(f is not None for f in drawn), "the smoke rows feed none of the declared figures"
    for fig, declaration in zip(drawn, wl.figures):
        if fig is not None and declaration.thesis:
            assert fig.layout.title.text.startswith(declaration.thesis)
    checks = wl.checks(df)
    assert checks and all(isinstance(c, Check) for c in checks)
    assert all(c.verdict in VERDICTS for c in checks), [c.verdict for c in checks]
    refuted = [c.name for c in checks if c.verdict == "does not hold"]
    assert not refuted, f"a smoke run is too small to refute a claim; declare what {refuted} needs"
