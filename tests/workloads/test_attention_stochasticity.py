"""attention_stochasticity: the smoke runs in both backends and agrees, both models learn digits, the
figures draw from real rows, and every check holds, does not hold or is too small to decide on tables
made from real runs (with values edited where a verdict must be forced)."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

import backends
import workloads
from core.checks import Check
from core.figures import Figure
from core.workload import Context, Skip
from tests.helpers import run_rows, smoke_params

W = workloads.get("attention_stochasticity")


def ctx(seed: int = 0) -> Context:
    return Context(seed=seed, device="cpu", num_cpus=2, deadline=time.monotonic() + 300)


def params(**overrides) -> W.Params:
    return smoke_params(W, **overrides)


def table(runs: list[tuple[str, W.Params, int]]) -> pd.DataFrame:
    """Rows as the store writes them, for (backend, params, repeat) trials run here."""
    return run_rows(W, runs, num_cpus=1)


@pytest.fixture(scope="module")
def smoke_rows() -> pd.DataFrame:
    return table([("torch", W.smoke, 0), ("jax", W.smoke, 0)])


# Tiny attention-only runs, 3 seeds, 10 epochs of 8 steps: softmax and Sinkhorn-3 at two patch sizes,
# Sinkhorn-21 for 10 and for 2 epochs. Every check gets real rows from these.
_TINY = dict(model="attention_only", width=16, head_dim=8, train_size=256, batch=32, lr=1e-3, epochs=10, eval_batch=16)


@pytest.fixture(scope="module")
def check_rows() -> pd.DataFrame:
    runs = [
        ("torch", params(**_TINY, normalization=norm, patch=patch), seed)
        for norm in ("softmax", "sinkhorn")
        for patch in (2, 4)
        for seed in range(3)
    ]
    runs += [
        ("torch", params(**_TINY | dict(epochs=epochs), normalization="sinkhorn", sinkhorn_iters=21, patch=2), 0)
        for epochs in (10, 2)
    ]
    return table(runs)


def only(checks: list[Check], prefix: str) -> Check:
    found = [c for c in checks if c.name.startswith(prefix)]
    assert len(found) == 1, [c.name for c in checks]
    return found[0]


def test_smoke_records_every_metric_per_epoch_layer_and_head(smoke_rows):
    rows = smoke_rows[smoke_rows["backend"] == "torch"]
    assert set(rows["metric"]) == {m.name for m in W.metrics}
    colsum = rows[rows["metric"] == "colsum_q50"]
    assert set(colsum["step"]) == {0, 1, 2}  # initialisation and each epoch
    assert set(colsum["tag"]) == {"layer0/head0", "layer0/head1", "all"}
    assert set(rows[rows["metric"] == "epoch_time_s"]["step"]) == {1, 2}
    steps = rows[rows["metric"] == "train_steps"].set_index("step")["value"]
    per_epoch = 1348 // W.smoke.batch  # digits' 1,348 training images, the last incomplete batch dropped
    assert steps.to_dict() == {1: per_epoch, 2: 2 * per_epoch}


def test_torch_and_jax_runs_agree_from_the_same_seed(smoke_rows):
    keyed = smoke_rows[smoke_rows["metric"] != "epoch_time_s"].pivot_table(
        index=["metric", "step", "tag"], columns="backend", values="value", dropna=False
    )
    np.testing.assert_allclose(keyed["torch"], keyed["jax"], atol=2e-3)


def test_softmax_parameters_drop_the_sinkhorn_ones_and_attention_only_the_depth():
    p = W.Params(normalization="softmax", sinkhorn_iters=21, model="attention_only", depth=6)
    assert (p.sinkhorn_iters, p.sinkhorn_grad, p.depth, p.heads, p.mlp_dim) == (None,) * 5
    assert W.Params(normalization="sinkhorn", sinkhorn_iters=21).sinkhorn_iters == 21


def test_head_dim_sets_the_attention_width_as_in_the_sinkformers_vit():
    """The authors' attention-only model: width 128, one 64-wide head, projected back to 128."""
    import torch

    config = W._config(W.Params(model="attention_only", width=128, head_dim=64, patch=2), 8, 1, 10)
    weights = backends.get("torch").ops.vit_init(config, 0, "cpu")
    assert (config.tokens, config.head_dim) == (17, 64)
    assert tuple(weights["blocks"][0]["attn"]["wqkv"].shape) == (128, 3 * 64)
    assert tuple(weights["blocks"][0]["attn"]["wo"].shape) == (64, 128)
    assert "mlp" not in weights["blocks"][0] and len(weights["blocks"]) == 1
    logits, maps = backends.get("torch").ops.vit_apply(weights, torch.zeros(2, 1, 8, 8), config)
    assert tuple(logits.shape) == (2, 10) and tuple(maps[0].shape) == (2, 1, 17, 17)


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(patch=3), "patch=3 does not divide the digits image side 8"),
        (dict(width=18, heads=4), "heads=4 does not divide width=18"),
        (dict(batch=5000), "batch=5000 is larger than"),
    ],
)
def test_impossible_combinations_are_skipped_with_the_reason(bad, match):
    with pytest.raises(Skip, match=match):
        W.run(params(**bad), backends.get("torch"), ctx())


def test_mnist_absent_from_disk_is_skipped_not_downloaded(tmp_path, monkeypatch):
    from backends.datasets import load_images

    monkeypatch.setenv("DEEPERBENCH_DATA", str(tmp_path))
    monkeypatch.delenv("DEEPERBENCH_DOWNLOAD", raising=False)
    load_images.cache_clear()
    with pytest.raises(Skip, match="mnist is not under"):
        W.run(params(dataset="mnist", patch=7), backends.get("torch"), ctx())
    load_images.cache_clear()


@pytest.mark.parametrize("model", ["vit", "attention_only"])
@pytest.mark.parametrize("normalization", ["softmax", "sinkhorn"])
def test_two_epochs_on_digits_learn(model, normalization):
    records = W.run(
        params(model=model, normalization=normalization, width=32, mlp_dim=64, lr=3e-3, batch=32),
        backends.get("torch"),
        ctx(),
    )
    accuracy = {r.step: r.value for r in records if r.metric == "test_accuracy"}
    assert accuracy[2] > 0.4, accuracy  # chance is 0.1


# ------------------------------------------------------------------------------ checks: three verdicts


def _set(rows: pd.DataFrame, mask: pd.Series, values) -> pd.DataFrame:
    rows = rows.copy()
    rows.loc[mask, "value"] = values(rows[mask]) if callable(values) else values
    return rows


def test_fig52_check_holds_fails_and_is_too_small(check_rows):
    rows = check_rows[(check_rows["p_normalization"] == "softmax") & (check_rows["p_patch"] == 2)]
    share = rows["metric"] == "colsum_frac_within_0.1"

    def verdict(t: pd.DataFrame) -> Check:
        return only(W.checks(t), "Fig. 5.2 column sums, attention-only model, digits (torch")

    rising = verdict(_set(rows, share, lambda r: 0.3 + 0.05 * r["step"] + 0.01 * r["seed"]))
    falling = verdict(_set(rows, share, lambda r: 0.9 - 0.05 * r["step"] - 0.01 * r["seed"]))
    two_seeds = verdict(_set(rows, share, lambda r: 0.3 + 0.05 * r["step"])[lambda t: t["seed"] < 2])
    assert (rising.verdict, falling.verdict, two_seeds.verdict) == ("holds", "does not hold", "too small to decide")
    assert rising.figure == "Fig. 5.2" and "3 pairs" in rising.measured and "+0.450" in rising.measured
    assert "thesis epochs" in rising.note and "2 seed(s)" in two_seeds.note
    assert only(W.checks(rows), "Fig. 5.2").verdict in ("holds", "does not hold")  # the real rows decide too


def test_fig52_on_a_skipped_data_set_reads_not_measured_with_the_reason(check_rows):
    rows = check_rows[(check_rows["p_normalization"] == "softmax") & (check_rows["p_patch"] == 2)]
    mnist = (
        rows[rows["seed"] == 0]
        .drop_duplicates("trial_key")
        .assign(status="skipped", p_dataset="mnist", metric=None, value=np.nan, error="mnist is not under /nowhere")
    )
    checks = W.checks(pd.concat([rows, mnist]))
    skipped = only(checks, "Fig. 5.2 column sums, attention-only model, mnist")
    assert skipped.verdict == "not measured" and "mnist is not under /nowhere" in skipped.measured
    assert only(checks, "Fig. 5.2 column sums, attention-only model, digits").verdict in ("holds", "does not hold")


def test_beyond_the_thesis_vit_gets_its_own_check_without_a_figure_number(check_rows):
    rows = check_rows[(check_rows["p_normalization"] == "softmax") & (check_rows["p_patch"] == 2)].copy()
    rows["p_model"] = "vit"
    check = only(W.checks(rows), "column sums, ViT with MLPs (beyond the thesis)")
    assert check.figure == "" and "beyond the thesis" in check.note
    assert only(W.checks(rows), "Fig. 5.2").verdict == "not measured"


def test_sinkhorn_convergence_check_holds_fails_and_is_too_small(check_rows):
    dev = check_rows["metric"] == "colsum_max_abs_dev"
    ten, two = (check_rows[check_rows["p_epochs"] == e] for e in (10, 2))
    held = only(W.checks(_set(ten, dev, 1e-5)), "Sinkhorn >= 21")
    failed = only(W.checks(_set(ten, dev & (ten["step"] == 4), 0.05)), "Sinkhorn >= 21")
    short = only(W.checks(two), "Sinkhorn >= 21")
    assert (held.verdict, failed.verdict, short.verdict) == ("holds", "does not hold", "too small to decide")
    assert "epoch 4" in failed.measured and "epochs 2 < 5" in short.note


def test_patch_check_holds_fails_and_is_too_small(check_rows):
    rows = check_rows[check_rows["p_sinkhorn_iters"].fillna(3) == 3]
    accuracy = rows["metric"] == "test_accuracy"
    sink = accuracy & (rows["p_normalization"] == "sinkhorn")

    def verdict(t: pd.DataFrame) -> Check:
        return only(W.checks(t), "Fig. 5.6 patch sizes, Sinkhorn 3, digits (torch")

    better = verdict(_set(_set(rows, accuracy, 0.8), sink, lambda r: 0.85 + 0.01 * r["seed"]))
    worse = verdict(_set(_set(rows, accuracy, 0.8), sink, lambda r: 0.75 - 0.01 * r["seed"]))
    one_seed = verdict(_set(_set(rows, accuracy, 0.8), sink, 0.9)[lambda t: t["seed"] == 0])
    assert (better.verdict, worse.verdict, one_seed.verdict) == ("holds", "does not hold", "too small to decide")
    assert "6 pairs" in better.measured and "patch 2" in better.measured and "patch 4" in better.measured
    assert better.figure == "Fig. 5.6" and "45 epochs" in better.note


def test_overhead_check_holds_fails_and_is_too_small(check_rows):
    rows = check_rows[check_rows["p_sinkhorn_iters"].fillna(3) == 3]
    times = rows["metric"] == "epoch_time_s"
    sink = times & (rows["p_normalization"] == "sinkhorn")

    def verdict(t: pd.DataFrame) -> Check:
        return only(W.checks(t), "Sinkhorn 3 overhead, attention_only (torch")

    cheap = verdict(_set(_set(rows, times, 1.0), sink, lambda r: 1.02 + 0.01 * r["seed"]))
    costly = verdict(_set(_set(rows, times, 1.0), sink, lambda r: 1.5 + 0.01 * r["seed"]))
    two_seeds = verdict(_set(_set(rows, times, 1.0), sink, 1.02)[lambda t: t["seed"] < 2])
    assert (cheap.verdict, costly.verdict, two_seeds.verdict) == ("holds", "does not hold", "too small to decide")
    assert "+0.030" in cheap.measured and "+0.510" in costly.measured


@pytest.fixture(scope="module")
def smoke_grid_rows() -> pd.DataFrame:
    """The smoke sweep's document (sweeps/smoke.yaml): one seed, two epochs, both models, both attentions."""
    return table(
        [
            ("torch", params(model=model, normalization=norm), 0)
            for model in ("vit", "attention_only")
            for norm in ("softmax", "sinkhorn")
        ]
    )


def test_smoke_grid_reads_too_small_never_does_not_hold(smoke_grid_rows):
    checks = W.checks(smoke_grid_rows)
    assert {c.verdict for c in checks} <= {"too small to decide", "not measured"}, checks
    assert only(checks, "Fig. 5.2").verdict == "too small to decide"
    assert only(checks, "Fig. 5.6").verdict == "too small to decide"


def test_no_rows_are_not_measured(smoke_rows):
    checks = W.checks(smoke_rows.iloc[0:0])
    assert checks and all(c.verdict == "not measured" for c in checks)


# -------------------------------------------------------------------------------------------- figures


def test_figures_are_declared_with_the_thesis_numbers():
    thesis = {f.thesis for f in W.figures}
    assert {"Fig. 5.2", "Fig. 5.5", "Fig. 5.6"} <= thesis
    assert all(isinstance(f, Figure) for f in W.figures)
    beyond = [f for f in W.figures if "beyond the thesis" in f.title]
    assert beyond and all(f.thesis == "" for f in beyond)
    assert {s.figure for s in W.settings} == {"Fig. 5.2", "Fig. 5.5", "Fig. 5.6"}


def test_figures_draw_from_real_rows(check_rows, smoke_grid_rows):
    from results.plots import draw

    rows = pd.concat([check_rows, smoke_grid_rows])
    drawn = {f.title: draw(f, rows, W.metrics) for f in W.figures}
    assert all(fig is not None for fig in drawn.values()), [t for t, fig in drawn.items() if fig is None]
    box = drawn[W.figures[0].title]
    assert box.layout.title.text.startswith("Fig. 5.2") and "box" in {t.type for t in box.data}
    assert draw(W.figures[0], rows[rows["p_model"] == "vit"], W.metrics) is None
