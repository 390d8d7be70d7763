"""memory_depth: a small grid runs on both backends, its figures draw, its checks hold, fail and are too small."""

from __future__ import annotations

import pandas as pd
import pytest

import workloads
from core.figures import Figure
from core.trial import Resources, Trial
from harness.trial import execute
from tests.helpers import run_rows

WL = workloads.get("memory_depth")
SMALL = dict(width=16, batch=8, dtype="float64", timing_repeats=2)
"""A network small enough for seconds a trial; depths 2 and 16 span the 8x a flat-memory check needs."""


def _trial(backend: str, **params) -> Trial:
    p = WL.Params(**params)
    return Trial(
        key=f"t-{backend}-{abs(hash(str(params)))}",
        sweep="test",
        workload="memory_depth",
        version=WL.version,
        backend=backend,
        device="cpu",
        params=p.model_dump(mode="json"),
        repeat=0,
        seed=0,
        timeout_s=300,
        num_cpus=2,
        resources=Resources(),
        isolation="actor",
    )


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    runs = [
        (backend, WL.Params(model=model, depth=depth, **SMALL), 0)
        for backend in ("torch", "jax")
        for model in ("resnet", "momentum_reversible", "adjoint_euler")
        for depth in (2, 16)
    ]
    runs += [
        ("torch", WL.Params(model=model, depth=16, **SMALL | {"batch": batch}), 0)
        for model in ("resnet", "momentum_reversible")
        for batch in (2, 32)
    ]
    return run_rows(WL, runs)


def _verdicts(table: pd.DataFrame) -> dict[str, str]:
    """Check name (up to ':') -> verdict; fails if two checks of one name disagree."""
    out: dict[str, set[str]] = {}
    for c in WL.checks(table):
        out.setdefault(c.name.split(":")[0], set()).add(c.verdict)
    assert all(len(v) == 1 for v in out.values()), out
    return {k: v.pop() for k, v in out.items()}


FLAT = [
    f"{metric} flat in depth, {model}"
    for metric in ("activation_bytes", "saved_bytes")
    for model in ("momentum_reversible", "adjoint_euler")
]
BATCH = "memory grows more slowly with the batch"
EXACT = ["gradient of the exact reversal", "exact reconstruction"]


def _scaled(table: pd.DataFrame, model: str, metrics: list[str], by: str, factor: float = 1.0) -> pd.DataFrame:
    """A copy of ``table`` whose ``metrics`` rows of ``model`` are multiplied by ``factor`` times column ``by``."""
    out = table.copy()
    sel = (out["p_model"] == model) & out["metric"].isin(metrics)
    out.loc[sel, "value"] = out.loc[sel, "value"] * factor * out.loc[sel, by] + 1.0
    return out


def test_records_every_metric_on_both_backends(table):
    for backend in ("torch", "jax"):
        rows = table[(table["backend"] == backend) & (table["p_model"] == "momentum_reversible")]
        assert set(rows["metric"]) == {m.name for m in WL.metrics}
    times = table[(table["metric"] == "time_s")]
    assert times.groupby("trial_key")["sample"].nunique().eq(2).all()
    tags = set(table[table["metric"] == "grad_rel_err"]["tag"])
    assert tags == {"w1", "b1", "w2", "b2", "input"}


def test_every_check_holds_on_the_real_grid(table):
    verdicts = _verdicts(table)
    assert set(verdicts) == set(FLAT + [BATCH] + EXACT), verdicts
    assert all(v == "holds" for v in verdicts.values()), verdicts
    fig42 = next(c for c in WL.checks(table) if c.name.startswith(FLAT[0]))
    assert "torch: momentum_reversible" in fig42.measured and "jax: momentum_reversible" in fig42.measured
    assert "width 16 (thesis 500)" in fig42.note and fig42.figure == "Fig. 4.2"


def test_checks_do_not_hold_when_the_reversible_memory_grows(table):
    bad = _scaled(table, "momentum_reversible", ["saved_bytes", "activation_bytes"], "p_depth", 1e4)
    bad = _scaled(bad, "adjoint_euler", ["saved_bytes", "activation_bytes"], "p_depth", 1e4)
    bad = _scaled(bad, "momentum_reversible", ["activation_bytes"], "p_batch", 1e5)
    sel = (bad["p_model"] == "momentum_reversible") & (bad["metric"] == "state_recon_err")
    bad.loc[sel, "value"] = 1e-9
    sel = (bad["p_model"] == "momentum_reversible") & (bad["metric"] == "grad_rel_err")
    bad.loc[sel, "value"] = 1e-3
    verdicts = _verdicts(bad)
    assert all(verdicts[name] == "does not hold" for name in FLAT + [BATCH] + EXACT), verdicts


def test_checks_are_too_small_to_decide_on_a_small_run(table):
    shallow = table.copy()
    shallow.loc[shallow["p_depth"] == 16, "p_depth"] = 8  # depths 2 and 8: a 4x span, as the smoke sweep
    verdicts = _verdicts(shallow)
    assert all(verdicts[name] == "too small to decide" for name in FLAT + EXACT), verdicts
    two_batches = _verdicts(table[table["p_batch"] != 32])
    assert two_batches[BATCH] == "too small to decide", two_batches
    shallow_batches = table[(table["p_depth"] == 16) | (table["p_batch"] == 8)].copy()
    shallow_batches.loc[shallow_batches["p_depth"] == 16, "p_depth"] = 8  # the batch sweep at depth 8
    assert _verdicts(shallow_batches)[BATCH] == "too small to decide"
    check = next(c for c in WL.checks(shallow) if c.name.startswith(FLAT[0]))
    assert "depths span 4x < 8x" in check.note and "B/layer" in check.measured


def test_checks_say_not_measured_without_the_reversible_model(table):
    checks = WL.checks(table[table["p_model"] == "resnet"])
    assert checks and all(c.verdict == "not measured" for c in checks), checks


def test_figures_are_declared_and_draw_from_the_rows(table):
    from results.plots import draw

    assert isinstance(WL.figures, tuple) and all(isinstance(f, Figure) for f in WL.figures)
    drawn = {f.thesis or f.title: draw(f, table, WL.metrics) for f in WL.figures}
    assert all(fig is not None and fig.data for fig in drawn.values()), drawn
    assert drawn["Fig. 4.2"].layout.title.text.startswith("Fig. 4.2")
    names = [tr.name for tr in drawn["Fig. 4.2"].data]
    assert any(n.startswith("resnet") for n in names) and any(n.startswith("momentum_reversible") for n in names)
    assert {s.figure for s in WL.settings} == {"Fig. 4.2", "Fig. 4.7 (upper)"}


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
