"""topk_pruning: the smoke runs in both backends and agrees, sparsity is recorded per matrix, and the
figures and checks read the rows (and can fail)."""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

import backends
import workloads
from tests.helpers import run_rows, smoke_params
from harness.workload import Context, Skip

W = workloads.get("topk_pruning")


def params(**overrides) -> W.Params:
    return smoke_params(W, **overrides)


def table(runs: list[tuple[str, W.Params, int]]) -> pd.DataFrame:
    """Rows as the store writes them, for (backend, params, repeat) trials run here."""
    return run_rows(W, runs, num_cpus=2)


@pytest.fixture(scope="module")
def smoke_rows() -> pd.DataFrame:
    return table([("torch", W.smoke, 0), ("jax", W.smoke, 0)])


@pytest.fixture(scope="module")
def operator_rows() -> pd.DataFrame:
    """Dense, hard and relaxed p = 2 and 4/3 keeping half the weights, 3 epochs on 512 digits (torch)."""
    base = dict(train_size=512, epochs=3, lr=0.1, batch=64, keep=0.5)  # 10% learns too slowly for a test
    return table([("torch", params(**base, operator="dense"), 0), ("torch", params(**base, operator="hard"), 0),
                  ("torch", params(**base, operator="relaxed", p=2.0), 0),
                  ("torch", params(**base, operator="relaxed", p="4/3"), 0)])


def test_smoke_records_every_metric_per_epoch_and_matrix(smoke_rows):
    rows = smoke_rows[smoke_rows["backend"] == "torch"]
    assert set(rows["metric"]) == {m.name for m in W.metrics}
    assert sorted(rows[rows["metric"] == "test_error"]["step"]) == [0, 1, 2]  # initialisation and each epoch
    nnz = rows[rows["metric"] == "nnz_frac"]
    assert set(nnz["tag"]) == {"w1", "w2", "w3", "all"}
    # hard top-k: exactly ceil(10%) of each matrix (64x32, 32x32, 32x10), no extra entries
    frac = nnz[nnz["step"] == 2].set_index("tag")["value"]
    np.testing.assert_allclose(frac[["w1", "w2", "w3"]], [205 / 2048, 103 / 1024, 32 / 320])
    assert (rows[rows["metric"] == "extra_nnz"]["value"] == 0).all()


def test_torch_and_jax_runs_agree_from_the_same_seed(smoke_rows):
    rows = smoke_rows[smoke_rows["metric"] != "wall_s"]
    keyed = rows.pivot_table(index=["metric", "step", "tag"], columns="backend", values="value", dropna=False)
    np.testing.assert_allclose(keyed["torch"], keyed["jax"], atol=1e-4)


def test_inapplicable_parameters_are_nulled_and_p_is_checked():
    assert (W.Params(operator="hard", p=2.0, lam=1e-3).p, W.Params(operator="hard").lam) == (None, None)
    assert W.Params(operator="dense", keep=0.5).keep is None
    filled = W.Params(operator="relaxed", p=None, lam=None, keep=None)  # nulls carried over from a hard grid point
    assert (filled.p, filled.lam, filled.keep) == (2.0, 1e-4, 0.10)
    assert W.Params(operator="relaxed", p="4/3").p == pytest.approx(4 / 3)
    with pytest.raises(Exception, match="p=1.5: allowed 2 or 4/3"):
        W.Params(operator="relaxed", p=1.5)


def test_a_batch_larger_than_the_training_set_is_skipped():
    with pytest.raises(Skip, match="batch=512 is larger than the 256 training images"):
        W.run(params(batch=512), backends.get("torch"), Context(seed=0, device="cpu", num_cpus=1,
                                                                deadline=time.monotonic() + 60))


def test_checks_give_verdicts_on_real_rows_and_fail_on_contradicting_ones(operator_rows):
    checks = W.checks(operator_rows)
    assert len(checks) == 3 and all(c.passed is not None for c in checks), checks
    keeps = [c for c in checks if c.name.startswith("relaxed keeps")]
    assert keeps and keeps[0].passed is True, keeps

    forged = operator_rows.copy()
    relaxed_error = (forged["metric"] == "test_error") & (forged["p_operator"] == "relaxed")
    forged.loc[relaxed_error, "value"] = 0.95  # never reaches the hard top-k's error
    dense_nnz = (forged["metric"] == "nnz_frac") & (forged["p_operator"] == "relaxed")
    forged.loc[dense_nnz, "value"] = 0.3  # keeps far more than 10%
    assert all(c.passed is False for c in W.checks(forged))


def test_figures_show_fig_7_5_against_epochs_and_time(operator_rows):
    figs = W.figures(operator_rows)
    titles = [f.layout.title.text for f in figs]
    assert titles[0].startswith("Fig. 7.5: test error vs epoch") and titles[1].startswith("Fig. 7.5: test error vs training time")
    assert {t.name.split(" lr=")[0] for t in figs[0].data} == {"dense", "hard", "relaxed p=2 lam=0.0001",
                                                               "relaxed p=4/3 lam=0.0001"}
    assert all(f.to_html(include_plotlyjs=False) for f in figs)
    assert W.figures(operator_rows.iloc[0:0]) == []
