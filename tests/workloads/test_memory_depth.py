"""memory_depth: a small grid runs on both backends, its figures draw, and its checks hold and can fail."""
from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pytest

import workloads
from harness.spec import Resources
from harness.sweep import Trial
from harness.trial import execute
from results.store import trial_table

WL = workloads.get("memory_depth")


def _trial(backend: str, **params) -> Trial:
    p = WL.Params(**params)
    return Trial(key=f"t-{backend}-{abs(hash(str(params)))}", sweep="test", workload="memory_depth", version=WL.version,
                 backend=backend, device="cpu", params=p.model_dump(mode="json"), repeat=0, seed=0, timeout_s=300,
                 num_cpus=2, resources=Resources(), isolation="actor")


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    tables = []
    for backend in ("torch", "jax"):
        for model in ("resnet", "momentum_reversible"):
            for depth in (2, 8):
                trial = _trial(backend, model=model, depth=depth, width=16, batch=8, dtype="float64", timing_repeats=2)
                outcome = execute(trial)
                assert outcome.status == "ok", outcome.error
                tables.append(trial_table(trial, outcome, "test"))
    return pa.concat_tables(tables).to_pandas()


def test_records_every_metric_on_both_backends(table):
    for backend in ("torch", "jax"):
        rows = table[(table["backend"] == backend) & (table["p_model"] == "momentum_reversible")]
        assert set(rows["metric"]) == {m.name for m in WL.metrics}
    times = table[(table["metric"] == "time_s")]
    assert times.groupby("trial_key")["sample"].nunique().eq(2).all()
    tags = set(table[table["metric"] == "grad_rel_err"]["tag"])
    assert tags == {"w1", "b1", "w2", "b2", "input"}


def test_checks_hold_on_a_small_cpu_grid(table):
    checks = WL.checks(table)
    assert len(checks) == 6  # two slope checks per backend, gradient, reconstruction
    assert all(c.passed is True for c in checks), [c for c in checks if not c.passed]


def test_checks_fail_when_the_reversible_memory_grows(table):
    bad = table.copy()
    grow = (bad["p_model"] == "momentum_reversible") & bad["metric"].isin(["saved_bytes", "activation_bytes"])
    bad.loc[grow, "value"] = bad.loc[grow, "value"] * bad.loc[grow, "p_depth"]
    bad.loc[(bad["p_model"] == "momentum_reversible") & (bad["metric"] == "state_recon_err"), "value"] = 1e-9
    checks = {c.name.split(" (")[0]: c.passed for c in WL.checks(bad)}
    assert checks["activation_bytes slope"] is False and checks["saved_bytes slope"] is False
    assert checks["exact reconstruction"] is False


def test_figures_show_memory_and_time_vs_depth(table):
    figs = WL.figures(table)
    titles = [f.layout.title.text for f in figs]
    assert any(t.startswith("Fig. 4.2") for t in titles) and any("Time" in t for t in titles)
    fig42 = figs[0]
    assert {tr.name for tr in fig42.data} >= {"torch resnet", "jax momentum_reversible"}


def test_checks_say_not_measured_without_the_reversible_model(table):
    checks = WL.checks(table[table["p_model"] == "resnet"])
    assert len(checks) == 4 and all(c.passed is None for c in checks)


def test_inapplicable_parameters_are_nulled():
    assert WL.Params(model="resnet", gamma=0.5).gamma is None
    assert WL.Params(model="momentum", gamma=0.5).gamma == 0.5
    tv = WL.Params(model="momentum_reversible", block="resnet18")
    assert tv.depth is None and tv.width is None and tv.image_size == 32
    assert WL.Params(block="conv").image_size == 8 and WL.Params(image_size=4).image_size is None
    with pytest.raises(Exception, match="gamma"):
        WL.Params(gamma=1.5)


@pytest.mark.slow
def test_torchvision_block_runs_in_torch_and_is_skipped_in_jax():
    params = dict(model="momentum_reversible", block="resnet18", batch=2, image_size=16, timing_repeats=1)
    torch_out, jax_out = execute(_trial("torch", **params)), execute(_trial("jax", **params))
    assert torch_out.status == "ok", torch_out.error
    assert {r.metric for r in torch_out.records} >= {"saved_bytes", "time_s", "grad_rel_err"}
    assert jax_out.status == "skipped" and "torch backend only" in jax_out.error
