"""moe_precision: the smoke runs in both backends, a short digits run learns, noise makes the task harder, and
each check holds, fails or is too small to decide on (edited) real rows."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

import backends
import workloads
from backends.datasets import load_images, with_pixel_noise
from core.figures import Custom, Figure
from core.workload import Context
from tests.helpers import run_rows, smoke_params

W = workloads.get("moe_precision")


def params(**overrides) -> W.Params:
    return smoke_params(W, **overrides)


def table(runs: list[tuple[str, W.Params, int]]) -> pd.DataFrame:
    """Rows as the store writes them, for (backend, params, repeat) trials run here."""
    return run_rows(W, runs, num_cpus=1)


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    """Hard and relaxed routers, 5 seeds each, 6 steps (torch): too small for every check as run."""
    hard = params(router="hard")
    return table([("torch", p, seed) for seed in range(5) for p in (W.smoke, hard)])


def _scaled(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows as if the trials had run 600 steps with 32 experts (steps x 100; only the recorded setting changes)."""
    return rows.assign(step=rows["step"] * 100, p_steps=600, p_experts=32)


def _relaxed_like_hard(rows: pd.DataFrame, metric: str, change) -> pd.DataFrame:
    """The relaxed trials' ``metric`` set to ``change(hard value of the same seed and step, seed)``."""
    out = rows.copy()
    sel = out["metric"] == metric
    hard = out[sel & (out["p_router"] == "hard")].set_index(["seed", "step"])["value"]
    relaxed = sel & (out["p_router"] == "relaxed")
    keys = pd.MultiIndex.from_frame(out.loc[relaxed, ["seed", "step"]])
    out.loc[relaxed, "value"] = change(hard.reindex(keys).to_numpy(), out.loc[relaxed, "seed"].to_numpy())
    return out


def _check(rows: pd.DataFrame, contains: str):
    found = [c for c in W.checks(rows) if contains in c.name]
    assert len(found) == 1, [c.name for c in W.checks(rows)]
    return found[0]


def test_smoke_records_every_metric(rows):
    torch_rows = rows[(rows["backend"] == "torch") & (rows["seed"] == 0)]
    assert set(torch_rows["metric"]) == {m.name for m in W.metrics}
    prec = torch_rows[torch_rows["metric"] == "precision_at_1"]
    assert set(prec["step"]) == {0, 3, 6}
    assert set(torch_rows[torch_rows["metric"] == "step_time_s"]["step"]) == set(range(2, 7))


@pytest.mark.slow
def test_jax_smoke_records_every_metric_and_agrees_with_torch_at_initialisation(rows):
    """The JAX trial compiles for ~25 s on a loaded 2-core CPU, hence slow."""
    jax_rows = table([("jax", W.smoke, 0)])
    assert set(jax_rows["metric"]) == {m.name for m in W.metrics}
    first = {
        b: r[(r["metric"] == "precision_at_1") & (r["step"] == 0)]["value"].item()
        for b, r in (("jax", jax_rows), ("torch", rows[(rows["p_router"] == "relaxed") & (rows["seed"] == 0)]))
    }
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


def test_pixel_noise_is_one_fixed_draw_that_makes_digits_harder():
    clean = load_images("digits")
    noisy, again = with_pixel_noise(clean, 1.0), with_pixel_noise(clean, 1.0)
    assert noisy.train_x.shape == clean.train_x.shape and noisy.train_x.dtype == np.float32
    np.testing.assert_array_equal(noisy.test_x, again.test_x)  # the same images for every trial
    assert np.std(noisy.train_x - clean.train_x) == pytest.approx(1.0, abs=0.01)
    assert with_pixel_noise(clean, 0.0) is clean
    with pytest.raises(ValueError, match="std=-1"):
        with_pixel_noise(clean, -1.0)


def test_precision_check_is_too_small_as_run(rows):
    check = _check(rows, "vs hard: precision-at-1")
    assert check.verdict == "too small to decide", check
    assert "steps 6 < 200" in check.note and "experts 4 < 16" in check.note
    assert "95% CI, 5 pairs" in check.measured and check.figure == "Fig. 7.7"


def test_precision_check_holds_when_relaxed_is_above_hard_on_every_seed(rows):
    better = _relaxed_like_hard(_scaled(rows), "precision_at_1", lambda hard, seed: hard + 0.02 + 0.01 * seed)
    check = _check(better, "vs hard: precision-at-1")
    assert check.verdict == "holds", check
    assert check.measured.startswith("relaxed - hard precision-at-1 over the last quarter of the steps = +0.04")
    assert "32 experts, k = 1 of n = 17 tokens" in check.note  # ceil(17 x 1 / 32): the edited expert count


def test_precision_check_is_too_small_to_decide_when_the_interval_straddles_zero(rows):
    noisy = _relaxed_like_hard(_scaled(rows), "precision_at_1", lambda hard, seed: hard + 0.02 * (seed - 2) - 0.01)
    check = _check(noisy, "vs hard: precision-at-1")
    assert check.verdict == "too small to decide" and "= -0.01 [-0.0" in check.measured, check
    assert "interval contains the claim's threshold" in check.note


def test_precision_check_does_not_hold_when_relaxed_is_worse_at_every_seed(rows):
    worse = _relaxed_like_hard(_scaled(rows), "precision_at_1", lambda hard, seed: hard - 0.02 - 0.001 * seed)
    check = _check(worse, "vs hard: precision-at-1")
    assert check.verdict == "does not hold" and "= -0.02" in check.measured, check


def test_precision_check_is_undecided_when_the_hard_router_saturates(rows):
    saturated = _scaled(rows)
    saturated.loc[saturated["metric"] == "precision_at_1", "value"] = 0.97
    check = _check(saturated, "vs hard: precision-at-1")
    assert check.verdict == "too small to decide" and "saturated (precision 0.970" in check.note


def test_sparsity_check_holds_fails_and_is_too_small(rows):
    assert _check(rows, "combine weights sparse").verdict == "too small to decide"
    assert _check(_scaled(rows), "combine weights sparse").verdict == "holds"
    dense = _scaled(rows)
    dense.loc[(dense["metric"] == "router_nnz_frac") & (dense["p_router"] == "relaxed"), "value"] = 0.9
    check = _check(dense, "combine weights sparse")
    assert check.verdict == "does not hold" and "0.900" in check.measured


def test_overhead_check_holds_fails_and_is_too_small(rows):
    assert _check(rows, "step time").verdict == "too small to decide"  # 6 steps < 20
    cheap = _relaxed_like_hard(_scaled(rows), "step_time_s", lambda hard, seed: hard * 1.5)
    check = _check(cheap, "step time")
    assert check.verdict == "holds" and check.measured.startswith("step time relaxed / hard = 1.50x"), check
    dear = _relaxed_like_hard(_scaled(rows), "step_time_s", lambda hard, seed: hard * 3.0)
    assert _check(dear, "step time").verdict == "does not hold"


def test_checks_without_rows_are_not_measured(rows):
    assert {c.verdict for c in W.checks(rows.iloc[0:0])} == {"not measured"}


def test_figures_are_declared_with_the_thesis_figure_and_the_zoom_draws(rows):
    assert all(isinstance(f, (Figure, Custom)) for f in W.figures)
    assert [f.thesis for f in W.figures][:2] == ["Fig. 7.7", "Fig. 7.7"]
    zoom = next(f for f in W.figures if isinstance(f, Custom)).draw(rows)
    assert {t.name.split(" (")[0] for t in zoom.data} == {"hard", "relaxed p=2 lam=0.1 dykstra 10 it"}
    assert all(min(t.x) >= 0.75 * 6 for t in zoom.data)  # the last quarter of the 6 steps only
    assert [s.figure for s in W.settings] == ["Fig. 7.7"]


def test_short_digits_run_learns():
    ctx = Context(seed=0, device="cpu", num_cpus=1, deadline=time.monotonic() + 300)
    p = params(steps=60, eval_every=60, batch=64, train_size=None, lr=3e-3)
    records = W.run(p, backends.get("torch"), ctx)
    prec = {r.step: r.value for r in records if r.metric == "precision_at_1"}
    assert prec[60] > max(0.5, prec[0] + 0.3), prec
