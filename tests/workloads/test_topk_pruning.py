"""topk_pruning: the smoke runs in both backends and agrees, sparsity is recorded per matrix, the budget is
in SGD steps, and each check holds, fails or is too small to decide on (edited) real rows."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

import backends
import workloads
from core.figures import Custom, Figure
from core.workload import Context, Skip
from tests.helpers import run_rows, smoke_params

W = workloads.get("topk_pruning")


def params(**overrides) -> W.Params:
    return smoke_params(W, **overrides)


def table(runs: list[tuple[str, W.Params, int]]) -> pd.DataFrame:
    """Rows as the store writes them, for (backend, params, repeat) trials run here."""
    return run_rows(W, runs, num_cpus=1)


@pytest.fixture(scope="module")
def smoke_rows() -> pd.DataFrame:
    return table([("torch", W.smoke, 0), ("jax", W.smoke, 0)])


@pytest.fixture(scope="module")
def seeded_rows() -> pd.DataFrame:
    """Hard and relaxed p = 2 at the thesis' lr, 3 seeds, 40 steps on 256 digits (torch): too small as run."""
    runs = [
        ("torch", params(operator=op, steps=40, eval_every=10), seed) for op in ("hard", "relaxed") for seed in range(3)
    ]
    return table(runs)


def _at_budget(rows: pd.DataFrame, steps: int) -> pd.DataFrame:
    """The rows as if the trials had run ``steps`` SGD steps (only the recorded budget changes)."""
    return rows.assign(p_steps=steps)


def _relaxed_error(rows: pd.DataFrame, shift: float) -> pd.DataFrame:
    """The relaxed trials' test errors set to the hard trial's of the same seed and step, plus ``shift``."""
    out = rows.copy()
    error = out["metric"] == "test_error"
    hard = out[error & (out["p_operator"] == "hard")].set_index(["seed", "step"])["value"]
    relaxed = error & (out["p_operator"] == "relaxed")
    keys = pd.MultiIndex.from_frame(out.loc[relaxed, ["seed", "step"]])
    out.loc[relaxed, "value"] = hard.reindex(keys).to_numpy() + shift + 0.01 * out.loc[relaxed, "seed"].to_numpy()
    return out


def _check(rows: pd.DataFrame, prefix: str):
    found = [c for c in W.checks(rows) if c.name.startswith(prefix)]
    assert len(found) == 1, [c.name for c in W.checks(rows)]
    return found[0]


def test_smoke_records_every_metric_per_evaluation_and_matrix(smoke_rows):
    rows = smoke_rows[smoke_rows["backend"] == "torch"]
    assert set(rows["metric"]) == {m.name for m in W.metrics}
    assert sorted(rows[rows["metric"] == "test_error"]["step"]) == [0, 10, 20]  # initialisation, every 10 steps
    nnz = rows[rows["metric"] == "nnz_frac"]
    assert set(nnz["tag"]) == {"w1", "w2", "w3", "all"}
    # hard top-k: exactly ceil(10%) of each matrix (64x32, 32x32, 32x10), no extra entries
    frac = nnz[nnz["step"] == 20].set_index("tag")["value"]
    np.testing.assert_allclose(frac[["w1", "w2", "w3"]], [205 / 2048, 103 / 1024, 32 / 320])
    assert (rows[rows["metric"] == "extra_nnz"]["value"] == 0).all()
    clock = rows[rows["metric"] == "train_time_s"].sort_values("step")["value"].to_numpy()
    assert len(clock) == 2 and 0 < clock[0] < clock[1]  # cumulative


def test_torch_and_jax_runs_agree_from_the_same_seed(smoke_rows):
    rows = smoke_rows[~smoke_rows["metric"].isin(["train_time_s", "step_time_s"])]
    keyed = rows.pivot_table(index=["metric", "step", "tag"], columns="backend", values="value", dropna=False)
    np.testing.assert_allclose(keyed["torch"], keyed["jax"], atol=1e-4)


def test_inapplicable_parameters_are_nulled_and_p_and_eval_every_are_checked():
    assert (W.Params(operator="hard", p=2.0, lam=1e-3).p, W.Params(operator="hard").lam) == (None, None)
    assert W.Params(operator="dense", keep=0.5).keep is None
    filled = W.Params(operator="relaxed", p=None, lam=None, keep=None)  # nulls carried over from a hard grid point
    assert (filled.p, filled.lam, filled.keep) == (2.0, 1e-4, 0.10)
    assert W.Params(operator="relaxed", p="4/3").p == pytest.approx(4 / 3)
    with pytest.raises(Exception, match=r"p=1\.5: allowed 2 or 4/3"):
        W.Params(operator="relaxed", p=1.5)
    with pytest.raises(Exception, match="eval_every=300 must divide steps=1000"):
        W.Params(steps=1000, eval_every=300)


def test_the_default_budget_is_the_thesis_number_of_steps():
    default = W.Params()
    assert (default.lr, default.batch, default.steps, default.keep, default.lam) == (1e-2, 128, 14_000, 0.1, 1e-4)


def test_a_batch_larger_than_the_training_set_is_skipped():
    with pytest.raises(Skip, match="batch=512 is larger than the 256 training images"):
        W.run(
            params(batch=512),
            backends.get("torch"),
            Context(seed=0, device="cpu", num_cpus=1, deadline=time.monotonic() + 60),
        )


def test_faster_check_is_too_small_at_the_run_budget(seeded_rows):
    check = _check(seeded_rows, "relaxed p=2 lam=0.0001 trains faster than hard")
    assert check.verdict == "too small to decide" and "SGD steps 40 < 5000" in check.note, check
    assert "95% CI, 3 pairs" in check.measured and check.figure == "Fig. 7.5"


def test_faster_check_holds_when_relaxed_errors_are_lower(seeded_rows):
    check = _check(_relaxed_error(_at_budget(seeded_rows, 14_000), -0.05), "relaxed p=2")
    assert check.verdict == "holds", check
    assert check.measured.startswith("hard - relaxed mean test error over training = +0.04")  # 0.05 - mean seed offset


def test_faster_check_does_not_hold_when_relaxed_errors_are_higher(seeded_rows):
    check = _check(_relaxed_error(_at_budget(seeded_rows, 14_000), +0.05), "relaxed p=2")
    assert check.verdict == "does not hold", check
    assert "digits (64-32-32-10) instead of MNIST" in check.note


def test_faster_check_needs_three_seeds(seeded_rows):
    two = _relaxed_error(_at_budget(seeded_rows[seeded_rows["seed"] < 2], 14_000), -0.05)
    check = _check(two, "relaxed p=2")
    assert check.verdict == "too small to decide" and "2 seed(s) per configuration < 3" in check.note


def test_keeps_rate_check_holds_fails_and_is_too_small(seeded_rows):
    assert _check(seeded_rows, "relaxed keeps 0.1").verdict == "too small to decide"
    trained = _at_budget(seeded_rows, 14_000)
    assert _check(trained, "relaxed keeps 0.1").verdict == "holds"
    dense = trained.copy()
    dense.loc[(dense["metric"] == "nnz_frac") & (dense["p_operator"] == "relaxed"), "value"] = 0.3
    check = _check(dense, "relaxed keeps 0.1")
    assert check.verdict == "does not hold" and "0.3000" in check.measured


def test_checks_without_rows_are_not_measured(seeded_rows):
    assert {c.verdict for c in W.checks(seeded_rows.iloc[0:0])} == {"not measured"}
    hard_only = seeded_rows[seeded_rows["p_operator"] == "hard"]
    assert [c.verdict for c in W.checks(hard_only)] == ["not measured", "not measured"]


def test_figures_are_declared_with_the_thesis_figure_and_draw_error_vs_time(seeded_rows):
    assert all(isinstance(f, (Figure, Custom)) for f in W.figures)
    assert [f.thesis for f in W.figures][:2] == ["Fig. 7.5", "Fig. 7.5"]
    custom = next(f for f in W.figures if isinstance(f, Custom))
    fig = custom.draw(seeded_rows)
    assert {t.name.split(" (")[0] for t in fig.data} == {"hard", "relaxed p=2 lam=0.0001"}
    xs = np.asarray(fig.data[0].x, dtype=float)
    assert xs[0] == 0.0 and np.all(np.diff(xs) > 0)  # time starts at initialisation and grows
    assert custom.draw(seeded_rows.iloc[0:0]) is None
    assert [s.figure for s in W.settings] == ["Fig. 7.5"]
