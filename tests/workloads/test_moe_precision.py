"""moe_precision: the smoke runs in both backends, a short digits run learns, and the figures and
checks read the rows (and can fail)."""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

import backends
import workloads
from tests.helpers import run_rows, smoke_params
from harness.workload import Context

W = workloads.get("moe_precision")


def params(**overrides) -> W.Params:
    return smoke_params(W, **overrides)


def table(runs: list[tuple[str, W.Params, int]]) -> pd.DataFrame:
    """Rows as the store writes them, for (backend, params, repeat) trials run here."""
    return run_rows(W, runs, num_cpus=1)


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    hard = params(router="hard")
    return table([("torch", W.smoke, 0), ("torch", hard, 0), ("torch", W.smoke, 1), ("torch", hard, 1)])


def test_smoke_records_every_metric(rows):
    torch_rows = rows[rows["backend"] == "torch"]
    assert set(torch_rows["metric"]) == {m.name for m in W.metrics}
    prec = torch_rows[torch_rows["metric"] == "precision_at_1"]
    assert set(prec["step"]) == {0, 3, 6}
    assert set(torch_rows[torch_rows["metric"] == "step_time_s"]["step"]) == set(range(2, 7))


@pytest.mark.slow
def test_jax_smoke_records_every_metric_and_agrees_with_torch_at_initialisation(rows):
    """The JAX trial compiles for ~25 s on a loaded 2-core CPU, hence slow."""
    jax_rows = table([("jax", W.smoke, 0)])
    assert set(jax_rows["metric"]) == {m.name for m in W.metrics}
    first = {b: r[(r["metric"] == "precision_at_1") & (r["step"] == 0)]["value"].item()
             for b, r in (("jax", jax_rows), ("torch", rows[(rows["p_router"] == "relaxed") & (rows["repeat"] == 0)]))}
    assert first["jax"] == pytest.approx(first["torch"], abs=0.01)


def test_hard_routing_statistics_match_expert_choice(rows):
    hard = rows[(rows["p_router"] == "hard") & (rows["metric"] == "router_nnz_frac")]
    # n = 17 tokens, E = 4, capacity 1: k = 5, so 5 of 17 tokens per expert carry a non-zero weight
    # (softmax gates are never exactly 0).
    assert np.allclose(hard["value"], 5 / 17)


def test_params_null_what_the_router_does_not_use():
    hard = W.Params(router="hard", lam=0.5, solver="pav", max_iter=3)
    assert (hard.lam, hard.p, hard.solver, hard.max_iter) == (None, None, None, None)
    assert W.Params(router="relaxed", solver="threshold", max_iter=5).max_iter is None
    assert W.Params(router="relaxed", p="4/3", solver="pav").p == pytest.approx(4 / 3)


def test_figures_and_checks_read_the_rows(rows):
    figs = W.figures(rows)
    assert len(figs) == 3
    names = {c.name: c for c in W.checks(rows)}
    assert "relaxed_router_sparse" in names
    assert "relaxed_router_overhead_torch" in names
    prec = names["relaxed_router_precision_torch"]
    assert "noise" in prec.measured and "2 paired seeds" in prec.measured


def test_checks_can_fail(rows):
    dense = rows.copy()
    sel = (dense["metric"] == "router_nnz_frac") & (dense["p_router"] == "relaxed")
    dense.loc[sel, "value"] = 0.9
    slow = dense.copy()
    sel = (slow["metric"] == "step_time_s") & (slow["p_router"] == "relaxed")
    slow.loc[sel, "value"] *= 100.0
    worse = slow.copy()
    sel = (worse["metric"] == "precision_at_1") & (worse["p_router"] == "relaxed")
    worse.loc[sel, "value"] = -1.0
    names = {c.name: c for c in W.checks(worse)}
    assert names["relaxed_router_sparse"].passed is False
    assert names["relaxed_router_overhead_torch"].passed is False
    assert names["relaxed_router_precision_torch"].passed is False


def test_short_digits_run_learns():
    ctx = Context(seed=0, device="cpu", num_cpus=1, deadline=time.monotonic() + 300)
    p = params(steps=60, eval_every=60, batch=64, train_size=None, lr=3e-3)
    records = W.run(p, backends.get("torch"), ctx)
    prec = {r.step: r.value for r in records if r.metric == "precision_at_1"}
    assert prec[60] > max(0.5, prec[0] + 0.3), prec
