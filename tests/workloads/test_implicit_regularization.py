"""implicit_regularization: the smoke runs in both backends and agrees, and each check holds, fails or is too
small to decide on real rows of the thesis' Fig. 3.1 training (edited where a verdict needs other values)."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

import backends
import workloads
from core.figures import Custom, Figure, Setting
from core.workload import Context, Skip
from tests.helpers import run_rows, smoke_params

W = workloads.get("implicit_regularization")
DEPTHS = (2, 4, 16)


def params(**overrides) -> W.Params:
    return smoke_params(W, **overrides)


def table(runs: list[tuple[str, W.Params, int]]) -> pd.DataFrame:
    """Rows as the store writes them, for (backend, params, repeat) trials run here."""
    return run_rows(W, runs, num_cpus=2)


@pytest.fixture(scope="module")
def smoke_rows() -> pd.DataFrame:
    return table([("torch", W.smoke, 0), ("jax", W.smoke, 0)])


@pytest.fixture(scope="module")
def fig31_rows() -> pd.DataFrame:
    """The thesis' Fig. 3.1 training (500 steps, step L x 1e-2) on 20 pairs, L = 2, 4, 16, three seeds (torch):
    weight-tied GELU and ReLU, i.i.d. GELU; and weight-tied GELU beside a net of depth 64 (one seed)."""
    base = dict(steps=500, n=20, log_every=100, snapshot_every=250, profile_entries=0, ref_depth=None)
    runs = [
        ("torch", params(**base, depth=d, init=init, activation=act), seed)
        for init, act in (("tied", "gelu"), ("tied", "relu"), ("iid", "gelu"))
        for d in DEPTHS
        for seed in range(3)
    ]
    runs += [("torch", params(**base | dict(ref_depth=64), depth=d), 0) for d in DEPTHS]
    return table(runs)


def verdicts(rows: pd.DataFrame) -> dict[str, object]:
    """The checks by claim (the name before its first comma)."""
    return {c.name.split(",")[0]: c for c in W.checks(rows)}


def set_values(rows: pd.DataFrame, mask: pd.Series, value) -> pd.DataFrame:
    """A copy of ``rows`` whose selected values are ``value(selected rows)``."""
    out = rows.copy()
    out.loc[mask, "value"] = value(out[mask])
    return out


def layer_diff(rows: pd.DataFrame, init: str, activation: str) -> pd.Series:
    return (rows["metric"] == "max_layer_diff") & (rows["p_init"] == init) & (rows["p_activation"] == activation)


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
        W.run(
            params(**bad),
            backends.get("torch"),
            Context(seed=0, device="cpu", num_cpus=1, deadline=time.monotonic() + 60),
        )


def test_smoke_checks_are_too_small_to_decide_never_red(smoke_rows):
    checks = W.checks(smoke_rows)
    assert checks and all(c.verdict in ("too small to decide", "not measured") for c in checks), checks
    assert "gradient steps 40 < 500" in verdicts(smoke_rows)["1/L layer distance"].note


def test_the_thesis_claims_hold_on_the_thesis_training(fig31_rows):
    checks = verdicts(fig31_rows)
    for name in ("1/L layer distance", "convergence to the large-depth limit", "no smoothness with i.i.d. init"):
        assert checks[name].verdict == "holds", checks[name]
    assert "over L = 2 ... 16" in checks["1/L layer distance"].measured
    assert "3 pairs" in checks["1/L layer distance"].measured and checks["1/L layer distance"].figure == "Fig. 3.1"
    assert checks["long-time loss"].verdict == "too small to decide"  # 500 of 80,000 steps
    assert "gradient steps 500 < 80000" in checks["long-time loss"].note


def test_the_1_over_l_check_fails_when_the_distance_falls_like_one_over_root_l(fig31_rows):
    rows = set_values(fig31_rows, layer_diff(fig31_rows, "tied", "gelu"), lambda r: 0.9 / np.sqrt(r["p_depth"]))
    check = verdicts(rows)["1/L layer distance"]
    assert check.verdict == "does not hold" and "slope -0.50" in check.measured, check


def test_the_1_over_l_check_is_too_small_without_a_depth_span_of_8(fig31_rows):
    check = verdicts(fig31_rows[fig31_rows["p_depth"] < 16])["1/L layer distance"]
    assert check.verdict == "too small to decide" and "depths span 2x < 8x" in check.note, check


def test_the_limit_check_fails_when_the_distance_stays_and_is_too_small_with_a_shallow_reference(fig31_rows):
    dist = fig31_rows["metric"] == "dist_to_limit"
    check = verdicts(set_values(fig31_rows, dist & (fig31_rows["step"] > 0), lambda r: 0.5))
    assert check["convergence to the large-depth limit"].verdict == "does not hold", check
    shallow = fig31_rows.assign(p_ref_depth=fig31_rows["p_ref_depth"].where(fig31_rows["p_ref_depth"].isna(), 32))
    check = verdicts(shallow)["convergence to the large-depth limit"]
    assert check.verdict == "too small to decide" and "reference depth only 2x" in check.note, check


def test_the_iid_check_fails_when_iid_weights_become_smooth_and_is_too_small_with_one_seed(fig31_rows):
    rows = set_values(fig31_rows, layer_diff(fig31_rows, "iid", "gelu"), lambda r: 40.0 / r["p_depth"])
    assert verdicts(rows)["no smoothness with i.i.d. init"].verdict == "does not hold"
    check = verdicts(fig31_rows[fig31_rows["seed"] == 0])["no smoothness with i.i.d. init"]
    assert check.verdict == "too small to decide" and "1 seed(s) per configuration < 3" in check.note, check
    assert check.figure == "Table 3.1" and "CIFAR-10" in check.note


def test_the_relu_check_holds_fails_or_is_too_small(fig31_rows):
    relu = layer_diff(fig31_rows, "tied", "relu")
    slower = set_values(fig31_rows, relu, lambda r: (1.0 + 0.01 * r["seed"]) * r["p_depth"] ** -0.6)
    check = verdicts(slower)["smoothness lost with ReLU"]
    assert check.verdict == "holds" and "slopes ReLU -0.60" in check.measured, check
    gelu = fig31_rows[layer_diff(fig31_rows, "tied", "gelu") & fig31_rows["p_ref_depth"].isna()]
    gelu = gelu.set_index(["seed", "p_depth", "step"])["value"]
    same = set_values(
        fig31_rows, relu, lambda r: 1.1 * gelu.loc[list(zip(r["seed"], r["p_depth"], r["step"]))].to_numpy()
    )
    assert verdicts(same)["smoothness lost with ReLU"].verdict == "too small to decide"  # equal slopes: undecided
    smoother = set_values(
        fig31_rows,
        relu,
        lambda r: gelu.loc[list(zip(r["seed"], r["p_depth"], r["step"]))].to_numpy() * r["p_depth"] ** -0.3,
    )
    assert verdicts(smoother)["smoothness lost with ReLU"].verdict == "does not hold"
    short = slower.assign(p_steps=100)
    check = verdicts(short)["smoothness lost with ReLU"]
    assert check.verdict == "too small to decide" and "gradient steps 100 < 500" in check.note, check


def test_the_long_time_check_reads_the_longest_runs(fig31_rows):
    long = fig31_rows[
        (fig31_rows["p_init"] == "tied")
        & (fig31_rows["p_activation"] == "gelu")
        & (fig31_rows["p_depth"] == 4)
        & fig31_rows["p_ref_depth"].isna()
    ].assign(p_steps=80_000)
    rows = pd.concat([fig31_rows, long])
    check = verdicts(rows)["long-time loss"]
    assert check.verdict == "does not hold" and "after 500 steps" in check.measured, check  # the loss barely moved
    last = (rows["metric"] == "loss") & (rows["p_steps"] == 80_000) & (rows["step"] == 500)
    check = verdicts(set_values(rows, last, lambda r: 1e-3))["long-time loss"]
    assert check.verdict == "holds" and check.figure == "Fig. 3.2", check


def test_figures_and_settings_are_declarations_of_recorded_metrics_and_columns(fig31_rows, smoke_rows):
    rows = pd.concat([fig31_rows, smoke_rows])
    declared = [f for f in W.figures if isinstance(f, Figure)]
    assert {f.thesis for f in W.figures} == {"Fig. 3.1", "Fig. 3.2", ""}  # "": beyond the thesis
    for fig in declared:
        assert set(fig.metrics) <= set(rows["metric"]) and fig.x in rows.columns, fig
        assert all(c in rows.columns for c in (*fig.series, *fig.where, *filter(None, [fig.facet]))), fig
    entries = next(f for f in W.figures if isinstance(f, Custom))
    drawn = entries.draw(rows)
    assert len(drawn.data) == 2 * 3 and drawn.to_html(include_plotlyjs=False)  # V and W entries at 3 snapshots
    assert entries.draw(fig31_rows) is None  # no entries recorded
    assert [s.figure for s in W.settings] == ["Fig. 3.1", "Fig. 3.2", "Table 3.1"]
    assert all(isinstance(s, Setting) and set(s.ours.values()) <= set(rows.columns) for s in W.settings)
