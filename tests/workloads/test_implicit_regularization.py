"""implicit_regularization: the smoke runs in both backends and agrees, the 1/L fall shows on a small
grid, and the figures and checks read the rows (and can fail)."""
from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest

import backends
import workloads
from tests.helpers import run_rows, smoke_params
from harness.workload import Context, Skip

W = workloads.get("implicit_regularization")


def params(**overrides) -> W.Params:
    return smoke_params(W, **overrides)


def table(runs: list[tuple[str, W.Params, int]]) -> pd.DataFrame:
    """Rows as the store writes them, for (backend, params, repeat) trials run here."""
    return run_rows(W, runs, num_cpus=2)


@pytest.fixture(scope="module")
def smoke_rows() -> pd.DataFrame:
    return table([("torch", W.smoke, 0), ("jax", W.smoke, 0)])


@pytest.fixture(scope="module")
def depth_rows() -> pd.DataFrame:
    """Tied and i.i.d. GELU nets of depth 2, 4, 8 (torch), 30 steps on 20 pairs."""
    base = dict(steps=30, n=20, log_every=10, snapshot_every=15, profile_entries=1)
    runs = [("torch", params(**base, depth=d, init=init, ref_depth=16 if init == "tied" else None), 0)
            for init in ("tied", "iid") for d in (2, 4, 8)]
    return table(runs)


def test_smoke_records_every_metric_at_the_logged_steps(smoke_rows):
    rows = smoke_rows[smoke_rows["backend"] == "torch"]
    assert set(rows["metric"]) == {m.name for m in W.metrics}
    assert sorted(rows[rows["metric"] == "loss"]["step"]) == list(range(0, W.smoke.steps + 1, W.smoke.log_every))
    assert sorted(rows[rows["metric"] == "dist_to_limit"]["step"]) == [0, 20, 40]
    entries = rows[(rows["metric"] == "weight_entry") & (rows["step"] == 0)]
    assert len(entries) == 2 * W.smoke.depth and entries["tag"].str.match(r"layer\d+/[VW]\[\d+,\d+\]").all()
    first = rows[rows["step"] == 0].set_index("metric")["value"]
    assert first["max_layer_diff"] == 0.0 and first["dist_to_limit"] == 0.0  # smooth start: V = 0, W tied


def test_torch_and_jax_runs_agree_from_the_same_seed(smoke_rows):
    keyed = smoke_rows.pivot_table(index=["metric", "step", "tag"], columns="backend", values="value", dropna=False)
    np.testing.assert_allclose(keyed["torch"], keyed["jax"], rtol=1e-4, atol=1e-6)


def test_iid_init_drops_the_reference_depth():
    assert W.Params(init="iid", ref_depth=1024).ref_depth is None
    assert W.Params(init="tied", ref_depth=1024).ref_depth == 1024


@pytest.mark.parametrize("bad", [dict(depth=8, ref_depth=12), dict(depth=8, ref_depth=8)])
def test_a_reference_depth_that_is_no_multiple_is_skipped(bad):
    with pytest.raises(Skip, match="must be a multiple of depth=8 and larger"):
        W.run(params(**bad), backends.get("torch"), Context(seed=0, device="cpu", num_cpus=1,
                                                             deadline=time.monotonic() + 60))


def test_checks_hold_on_real_rows_and_fail_on_contradicting_ones(depth_rows):
    checks = W.checks(depth_rows)
    tied = next(c for c in checks if c.name.startswith("max_layer_diff slope, tied gelu"))
    iid = next(c for c in checks if c.name.startswith("max_layer_diff slope, iid gelu"))
    dist = next(c for c in checks if c.name.startswith("dist_to_limit slope"))
    assert tied.passed is True and iid.passed is True and dist.passed is True, checks
    assert "slope -1.0" in tied.measured or "slope -0.9" in tied.measured, tied.measured
    assert next(c for c in checks if c.name == "long-time loss").passed is None  # no run of 10,000 steps

    forged = depth_rows.copy()
    flat = forged["metric"].isin(["max_layer_diff", "dist_to_limit"]) & (forged["p_init"] == "tied")
    forged.loc[flat, "value"] = 1.0  # the smooth net's layers stop converging
    falling = (forged["metric"] == "max_layer_diff") & (forged["p_init"] == "iid")
    forged.loc[falling, "value"] = 1.0 / forged.loc[falling, "p_depth"]  # the i.i.d. one starts to
    long = forged[(forged["p_init"] == "tied") & (forged["p_depth"] == 8)].copy()
    long["p_steps"] = 10_000  # a long run whose loss does not go to zero
    long["params"] = long["params"].map(lambda p: json.dumps(json.loads(p) | {"steps": 10_000}))
    long["trial_key"] = "long"
    results = W.checks(pd.concat([forged, long]))
    graded = [c for c in results if c.passed is not None]
    assert len(graded) >= 4 and all(c.passed is False for c in graded), results


def test_figures_show_fig_3_1_and_3_2(depth_rows, smoke_rows):
    figs = W.figures(pd.concat([depth_rows, smoke_rows]))
    titles = [f.layout.title.text for f in figs]
    for prefix in ("Fig. 3.1 (left): max over", "Fig. 3.1 (left): max layer distance vs depth, up to",
                   "Fig. 3.1 (right)", "Fig. 3.2 (left)", "Fig. 3.2 (right)"):
        assert any(t.startswith(prefix) for t in titles), (prefix, titles)
    assert all(f.to_html(include_plotlyjs=False) for f in figs)
    assert W.figures(depth_rows.iloc[0:0]) == []
