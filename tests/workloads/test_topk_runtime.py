"""topk_runtime: parameters, trials on both backends, figures, and checks that can fail."""
from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pydantic
import pytest

import workloads
from harness.spec import Resources
from harness.sweep import Trial
from harness.trial import execute
from results.store import trial_table

wl = workloads.get("topk_runtime")


def _trial(backend: str, params, i: int) -> Trial:
    return Trial(key=f"topk-{backend}-{i}", sweep="test", workload=wl.name, version=wl.version, backend=backend,
                 device="cpu", params=params.model_dump(mode="json"), repeat=0, seed=i, timeout_s=300, num_cpus=2,
                 resources=Resources(), isolation="actor")


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    small = dict(n=300, batch=3, warmup=1, timing_repeats=2)
    plan = [("torch", wl.smoke), ("jax", wl.smoke)]
    for backend in ("torch", "jax"):
        plan += [(backend, wl.Params(solver="pav", dtype="float64", lam=0.1, **small)),
                 (backend, wl.Params(solver="hard", direction="fwdbwd", **small)),
                 (backend, wl.Params(solver="dykstra", p="4/3", **small))]
    plan += [("torch", wl.Params(solver="threshold", op="mag", p="4/3", direction="fwdbwd", **small)),
             ("torch", wl.Params(solver="dykstra", dtype="float64", lam=0.1, max_iter=5000, **small)),
             ("torch", wl.Params(solver="dykstra", dtype="float64", lam=0.1, **small)),
             ("torch", wl.Params(solver="pav", lam=0.1, **small)),
             ("torch", wl.Params(solver="dykstra", lam=0.1, max_iter=5000, **small))]
    tables, statuses = [], []
    for i, (backend, params) in enumerate(plan):
        trial = _trial(backend, params, i)
        outcome = execute(trial)
        statuses.append((params.solver, params.p, outcome.status, outcome.error))
        tables.append(trial_table(trial, outcome, "test"))
    assert [s[2] for s in statuses] == ["skipped" if s[0] == "dykstra" and s[1] != 2.0 else "ok" for s in statuses], statuses
    return pa.concat_tables(tables).to_pandas()


def test_params_null_what_does_not_apply_and_fill_k():
    hard = wl.Params(n=1000, solver="hard", lam=0.5, p="4/3", max_iter=7)
    assert (hard.k, hard.lam, hard.p, hard.max_iter, hard.tol) == (100, None, None, None, None)
    exact = wl.Params(n=95, solver="pav", max_iter=7, tol=1e-3, p="4/3")
    assert (exact.k, exact.max_iter, exact.tol, exact.p) == (10, None, None, 4.0 / 3.0)
    assert wl.Params(n=10, k=3, solver="dykstra").max_iter == 100
    with pytest.raises(pydantic.ValidationError, match="p=1.5"):
        wl.Params(p=1.5)
    with pytest.raises(pydantic.ValidationError, match="k=11"):
        wl.Params(n=10, k=11)


def test_trials_record_declared_metrics(table):
    ok = table[table["status"] == "ok"]
    assert set(ok["metric"]) <= {m.name for m in wl.metrics}
    assert {"time_s", "max_abs_err_vs_exact", "iterations", "nnz_frac", "mask_sum_err", "peak_bytes"} <= set(ok["metric"])
    skipped = table[table["status"] == "skipped"]
    assert len(skipped) == 2 and skipped["error"].str.contains("p = 2").all()
    times = ok[ok["metric"] == "time_s"]
    assert times["sample"].notna().all() and (times["value"] > 0).all()


def test_figures_and_checks_on_measured_rows(table):
    figs = wl.figures(table)
    assert len(figs) == 3 and all(hasattr(f, "to_html") for f in figs)
    checks = {c.name: c for c in wl.checks(table)}
    assert checks["exact solvers agree"].passed is True
    assert checks["converged Dykstra (float64)"].passed is True
    assert checks["converged Dykstra (float32)"].passed is not None
    assert checks["masks sum to k"].passed is True
    assert checks["exactly sparse"].passed is True
    assert checks["100 Dykstra iterations"].passed is False  # n=1000, lam=0.1: far from converged (the anchors' finding)
    assert any(name.startswith("Dykstra vs PAV") for name in checks)


def test_checks_can_fail(table):
    bad = table.copy()
    pav64 = (bad["p_solver"] == "pav") & (bad["p_dtype"] == "float64") & (bad["metric"] == "max_abs_err_vs_exact")
    bad.loc[pav64, "value"] = 1e-3
    bad.loc[bad["metric"] == "mask_sum_err", "value"] = 5.0
    bad.loc[bad["metric"] == "nnz_frac", "value"] = 1.0
    checks = {c.name: c for c in wl.checks(bad)}
    assert checks["exact solvers agree"].passed is False
    assert checks["masks sum to k"].passed is False
    assert checks["exactly sparse"].passed is False
    assert wl.checks(table.iloc[0:0])[0].passed is None
