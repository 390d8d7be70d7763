"""icl_autoregressive: the smoke runs in both backends and agrees, the line search finds the best step,
and the figures and checks read the rows (and can fail)."""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

import backends
import workloads
from tests.helpers import run_rows, smoke_params
from backends.ar_init import ar_sequences
from harness.workload import Context, Skip

W = workloads.get("icl_autoregressive")


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
    """Linear attention at L = 1, 2, 3 and softmax+MLP at L = 1 (torch, smoke sizes)."""
    return table([("torch", params(depth=d), 0) for d in (1, 2, 3)] + [("torch", params(depth=1, softmax=True), 0)])


def test_smoke_records_every_metric_and_method(smoke_rows):
    rows = smoke_rows[smoke_rows["backend"] == "torch"]
    assert set(rows["metric"]) == {m.name for m in W.metrics}
    mse = rows[rows["metric"] == "test_mse"]
    assert set(mse["tag"]) == {"transformer", "gd", "lstsq"}
    assert sorted(mse[mse["tag"] == "transformer"]["step"]) == list(range(W.smoke.epochs + 1))  # 0 = init
    assert sorted(rows[rows["metric"] == "train_loss"]["step"]) == list(range(1, W.smoke.epochs + 1))
    final = mse[mse["tag"] != "transformer"].set_index("tag")["value"]
    assert final["lstsq"] < final["gd"]  # two gradient steps do not reach the least-squares fit


def test_torch_and_jax_runs_agree_from_the_same_seed(smoke_rows):
    rows = smoke_rows[smoke_rows["metric"] != "epoch_time_s"]
    keyed = rows.pivot_table(index=["metric", "step", "tag"], columns="backend", values="value", dropna=False)
    np.testing.assert_allclose(keyed["torch"], keyed["jax"], rtol=1e-3, atol=1e-5)
    exact = rows[rows["tag"].isin(["gd", "lstsq"])].pivot_table(index=["metric", "tag"], columns="backend", values="value")
    np.testing.assert_allclose(exact["torch"], exact["jax"], rtol=1e-9)


def test_linear_attention_drops_the_mlp_width_and_yaml_on_turns_softmax_on():
    assert W.Params(softmax=False, mlp_dim=128).mlp_dim is None
    assert W.Params.model_validate({"softmax": "on", "mlp_dim": 128}).mlp_dim == 128


def test_a_batch_larger_than_the_training_set_is_skipped():
    with pytest.raises(Skip, match="batch=256 is larger than n_train=128"):
        W.run(params(batch=256), backends.get("torch"), Context(seed=0, device="cpu", num_cpus=1,
                                                                deadline=time.monotonic() + 60))


def test_line_search_finds_the_minimum_and_beats_its_neighbours():
    from workloads.icl_autoregressive import _line_search, _mse

    eta, value = _line_search(lambda e: (np.log(e) - np.log(0.0123)) ** 2 + 1.0)
    assert abs(np.log(eta / 0.0123)) < 1e-3 and abs(value - 1.0) < 1e-6
    states = ar_sequences(64, 3, 10, seed=0)
    ops = backends.get("jax").ops
    mse = lambda e: _mse(np.asarray(ops.ar_gd_predict(states, 3, e)), states[:, 1:])
    eta, best = _line_search(mse)
    assert best <= min(mse(eta * 0.9), mse(eta * 1.1)) and best < mse(0.0)


def test_checks_give_verdicts_on_real_rows_and_fail_on_contradicting_ones(depth_rows):
    checks = W.checks(depth_rows)
    assert len(checks) == 3 and all(c.passed is not None for c in checks), checks
    assert all("ratio L=1" in c.measured for c in checks if "L >= 3" not in c.name)

    forged = depth_rows.copy()
    mse = forged["metric"] == "test_mse"
    gd = forged[mse & (forged["tag"] == "gd")].set_index("trial_key")["value"]
    transformer = mse & (forged["tag"] == "transformer")
    keys = forged.loc[transformer, "trial_key"]
    factor = np.where(forged.loc[transformer, "p_softmax"], 2.0,  # softmax+MLP behind GD
                      np.where(forged.loc[transformer, "p_depth"] <= 2, 1000.0, 1.0))  # far behind, then even
    forged.loc[transformer, "value"] = keys.map(gd).to_numpy() * factor
    assert all(c.passed is False for c in W.checks(forged))
    assert all(c.passed is None for c in W.checks(depth_rows[depth_rows["metric"] != "test_mse"]))


def test_figures_show_fig_6_5_and_the_training_curves(depth_rows, smoke_rows):
    figs = W.figures(pd.concat([depth_rows, smoke_rows]))
    titles = [f.layout.title.text for f in figs]
    assert titles[0].startswith("Fig. 6.5 / 6.10") and titles[1].startswith("Training")
    names = {t.name for t in figs[0].data}
    for method in ("gd ", "lstsq ", "transformer linear ", "transformer softmax+MLP "):
        assert any(n.startswith(method) for n in names), (method, names)
    assert all(f.to_html(include_plotlyjs=False) for f in figs)
    assert W.figures(depth_rows.iloc[0:0]) == []
