"""Every registered workload, whatever it is, has the shape the harness needs and its smoke runs."""
from __future__ import annotations

import pathlib

import pandas as pd
import pyarrow as pa
import pytest

import backends
import workloads
from harness.spec import load_specs
from harness.sweep import Trial
from harness.spec import Resources
from harness.trial import execute
from harness.workload import Check
from results.store import trial_table

ROOT = pathlib.Path(__file__).resolve().parents[2]
SWEEPS = sorted((ROOT / "sweeps").glob("*.yaml"))


def smoke_trial(name: str, backend: str) -> Trial:
    wl = workloads.get(name)
    return Trial(key=f"smoke-{name}-{backend}", sweep="conf", workload=name, version=wl.version, backend=backend,
                 device="cpu", params=wl.smoke.model_dump(mode="json"), repeat=0, seed=0, timeout_s=600,
                 num_cpus=2, resources=Resources(), isolation="actor")


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
    figs = wl.figures(df)
    assert all(hasattr(f, "to_html") for f in figs)
    checks = wl.checks(df)
    assert all(isinstance(c, Check) for c in checks)
    assert isinstance(df, pd.DataFrame)
