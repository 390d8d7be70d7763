"""moe_precision: does a relaxed top-k router improve a sparse MoE ViT's precision-at-1 over hard top-k?

Trains the ``moe_vit`` (a small ViT whose every ``every``-th MLP is a mixture of ``experts`` expert
MLPs with expert-choice routing over the tokens of one image) with the hard top-k router (the
baseline) or the chapter's relaxed ``topk_mask`` (p, lam, solver; Dykstra with ``max_iter``
iterations differentiated by unrolling them), on scikit-learn's digits by default. Records, per
training step, the training loss and step time, and every ``eval_every`` steps the validation
precision-at-1 (single-label data: the accuracy) and routing statistics of a fixed evaluation
batch. ``noise_std`` adds one fixed draw of Gaussian pixel noise to the images: on clean digits both
routers saturate near 97% and cannot be told apart. Thesis chapter 7: section 7.6 "Sparse MoEs",
appendix 7.C.3, Fig. 7.7.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
import pandas as pd
import pydantic

from backends import Backend
from backends.datasets import DatasetUnavailable, load_images, with_pixel_noise
from backends.moe import MoEConfig, routing_stats
from backends.vit import ViTConfig
from core.aggregate import ok_rows, summarize
from core.checks import at_least, decide, paired_interval, pairs, seeds
from core.figures import Custom, Setting, per_epoch
from core.training import passes
from core.workload import Check, Context, Float, Metric, OnlyIf, Record, Skip
from core.workload import Params as _Params
from workloads._relaxed_vs_hard import gain_over_hard, step_time_bars
from workloads._vit import image_arrays, vit_input

name = "moe_precision"
version = 3  # 2: noise_std, paired intervals; 3: experts process only the tokens routed to them
backends = ("torch", "jax")
metrics = (
    Metric(
        "precision_at_1", "fraction", "higher", "last", "validation precision-at-1 (accuracy for single-label data)"
    ),
    Metric("train_loss", "nats", "lower", "last", "cross-entropy of the step's minibatch"),
    Metric(
        "step_time_s", "s", "lower", "median", "wall time of one training step (first step, with compilation, excluded)"
    ),
    Metric(
        "tokens_unrouted_frac",
        "fraction",
        "lower",
        "last",
        "tokens no expert picked (evaluation batch, all MoE layers)",
    ),
    Metric(
        "experts_per_token_cv", "1", "lower", "last", "coefficient of variation of the experts a token is routed to"
    ),
    Metric("router_nnz_frac", "fraction", "lower", "last", "non-zero fraction of the combine weights (gate x mask)"),
)
_RELAXED_ONLY = ("p", "lam", "solver")
_IF_RELAXED = OnlyIf(router=["relaxed"])
_ROUTER_KEYS = ("router", "p", "lam", "solver", "max_iter")


class Params(_Params):
    """Router, MoE shape, model and training of one run (thesis 7.6, 7.C.3)."""

    router: Literal["hard", "relaxed"] = pydantic.Field(
        "hard", description="hard top-k mask (baseline) or relaxed topk_mask"
    )
    p: Annotated[Float | None, _IF_RELAXED] = pydantic.Field(
        2.0, description="relaxed only: 2 or 4/3 (Dykstra needs 2)"
    )
    lam: Annotated[Float | None, _IF_RELAXED] = pydantic.Field(
        0.1, gt=0, description="relaxed only: regularisation strength"
    )
    solver: Annotated[Literal["threshold", "pav", "dykstra"] | None, _IF_RELAXED] = pydantic.Field(
        "dykstra", description="relaxed only"
    )
    max_iter: Annotated[pydantic.PositiveInt | None, OnlyIf(router=["relaxed"], solver=["dykstra"])] = pydantic.Field(
        10, le=10000, description="relaxed Dykstra only: unrolled iterations"
    )
    experts: pydantic.PositiveInt = pydantic.Field(4, le=256)
    capacity_factor: Float = pydantic.Field(1.0, gt=0, le=64, description="k = ceil(n * capacity_factor / experts)")
    every: pydantic.PositiveInt = pydantic.Field(2, description="every `every`-th block's MLP is an MoE layer")
    depth: pydantic.PositiveInt = pydantic.Field(2, le=64)
    width: pydantic.PositiveInt = pydantic.Field(64, le=4096)
    heads: pydantic.PositiveInt = pydantic.Field(4, le=64)
    mlp_dim: pydantic.PositiveInt = pydantic.Field(128, le=16384, description="each expert's hidden width")
    patch: pydantic.PositiveInt = 2
    steps: pydantic.PositiveInt = pydantic.Field(200, le=1_000_000)
    lr: Float = pydantic.Field(1e-3, gt=0, le=10)
    batch: pydantic.PositiveInt = 64
    eval_every: pydantic.PositiveInt = pydantic.Field(20, description="steps between validation evaluations")
    eval_batch: pydantic.PositiveInt = pydantic.Field(100, description="test images whose routing is recorded")
    dataset: Literal["digits", "mnist", "cifar10"] = pydantic.Field(
        "digits",
        description="digits ships with scikit-learn; mnist/cifar10 read from disk, never downloaded by default",
    )
    noise_std: Float = pydantic.Field(
        0.0,
        ge=0,
        le=100,
        description="Gaussian noise added to every standardised "
        "pixel (one fixed draw for all trials): a harder task that does not saturate",
    )
    train_size: pydantic.PositiveInt | None = None
    dtype: Literal["float32", "float64"] = "float32"


def _configs(params: Params, image_size: int, channels: int, num_classes: int) -> tuple[ViTConfig, MoEConfig]:
    geometry = vit_input(params, image_size, channels, num_classes)
    if params.width % params.heads:
        raise Skip(f"heads={params.heads} does not divide width={params.width}")
    if params.every > params.depth:
        raise Skip(f"every={params.every} > depth={params.depth}: the model would have no MoE layer")
    relaxed = params.router == "relaxed"
    if relaxed and params.solver == "dykstra" and params.p != 2.0:
        raise Skip(f"p={params.p} with solver=dykstra: Dykstra needs p = 2")
    config = ViTConfig(**geometry, depth=params.depth, heads=params.heads, mlp_dim=params.mlp_dim)
    try:
        moe = MoEConfig(
            experts=params.experts,
            capacity_factor=float(params.capacity_factor),
            every=params.every,
            router=params.router,
            lam=float(params.lam or 0.1),
            p=float(params.p or 2.0),
            solver=params.solver or "dykstra",
            max_iter=params.max_iter or 10,
        )
    except ValueError as bad:
        raise Skip(str(bad)) from None
    return config, moe


def run(params: Params, backend: Backend, ctx: Context) -> list[Record]:
    """Train ``steps`` steps; record loss and step time per step, precision and routing every ``eval_every``."""
    try:
        data = with_pixel_noise(load_images(params.dataset), params.noise_std)
    except DatasetUnavailable as missing:
        raise Skip(str(missing)) from None
    config, moe = _configs(params, data.image_size, data.channels, data.num_classes)
    n_train, device, train_x, train_y, test_x, eval_x = image_arrays(params, data, backend, ctx.device)
    ops = backend.ops
    trainer = ops.moe_vit_trainer(
        config, moe, ops.moe_vit_init(config, moe, ctx.seed, device, params.dtype), params.lr, "adam"
    )

    def evaluate(step: int) -> list[Record]:
        precision = float(np.mean(trainer.predict(test_x) == data.test_y))
        _, combine = ops.moe_vit_apply(trainer.params, eval_x, config, moe)
        stats = routing_stats(np.concatenate([backend.to_numpy(c) for c in combine], axis=1))
        return [Record("precision_at_1", precision, step=step)] + [Record(k, v, step=step) for k, v in stats.items()]

    records = evaluate(0)
    rng = np.random.default_rng(ctx.seed)
    orders = ((step, rng.choice(n_train, params.batch, replace=False)) for step in range(1, params.steps + 1))
    fit = lambda _, order: trainer.fit_epoch(train_x, train_y, order, params.batch)
    for done in passes(backend, ctx.device, fit, orders, lr=params.lr, unit="step"):
        records.append(Record("train_loss", done.loss, step=done.step))
        if done.step > 1:
            records.append(Record("step_time_s", done.seconds, step=done.step))
        if done.step % params.eval_every == 0 or done.step == params.steps:
            records += evaluate(done.step)
    return records


# ----------------------------------------------------------------------------------------- report

_SERIES = ("p_router", "p_lam", "p_solver")
_LATE = 0.75
"""Fig. 7.7's "last training steps": the evaluations at or after this fraction of the steps."""
_MIN_STEPS = 200
"""Steps the precision comparison needs, so that its last quarter comes well after the start: on digits
with pixel noise 1 (batch 32, Adam 3e-3) precision-at-1 is 0.19 after 66 steps, 0.38 after 132, 0.61
after 400 and still rising; the thesis trained 7 epochs of JFT-300M."""
_MIN_EXPERTS = 16
"""The thesis' routing regime: many experts (32), each taking a small share of the tokens (k/n = 0.07)."""
_SATURATED = 0.95
_SETUP_EXCLUDED = {"p_router", "p_p", "p_lam", "p_solver", "p_max_iter"}


def _label(row: pd.Series) -> str:
    if row["p_router"] == "hard":
        return "hard"
    solver = row.get("p_solver")
    it = f" {int(row['p_max_iter'])} it" if solver == "dykstra" and pd.notna(row.get("p_max_iter")) else ""
    return f"relaxed p={float(row['p_p']):.3g} lam={float(row['p_lam']):.3g} {solver}{it}"


def _late_precision_zoom(table: pd.DataFrame):
    """Fig. 7.7's zoom: median precision-at-1 (IQR over seeds) over the last quarter of the steps."""
    from results.plots import median_lines  # plotly: loaded by the report only

    steps = summarize(table, metrics, by_step=True)
    prec = steps[(steps["metric"] == "precision_at_1") & (steps["step"] >= _LATE * steps["p_steps"])]
    if prec.empty:
        return None
    return median_lines(prec, "step", _label, x_title="training step", y_title="precision-at-1")


_PER_STEP = dict(series=_SERIES, x_title="training step")
"""A curve per operator setting against the training step."""
figures = (
    per_epoch(
        "Validation precision-at-1 vs training step, hard vs relaxed top-k router",
        "precision_at_1",
        thesis="Fig. 7.7",
        y_title="precision-at-1",
        **_PER_STEP,
    ),
    Custom(
        "Validation precision-at-1 in the last quarter of the training steps (the zoom)",
        _late_precision_zoom,
        thesis="Fig. 7.7",
    ),
    step_time_bars(
        "Time per training step by router (thesis: 15 h relaxed vs 10 h hard)",
        "p_router",
        ("p_lam", "p_solver"),
        "router",
    ),
    per_epoch(
        "Non-zero fraction of the combine weights (gate x mask) vs training step",
        "router_nnz_frac",
        y_title="non-zero fraction",
        **_PER_STEP,
    ),
)

settings = (
    Setting(
        "Fig. 7.7",
        thesis={
            "model": "V-MoE S/32 (ViT-S, 32x32 patches), expert-choice routing",
            "data": "JFT-300M (multi-label)",
            "experts": "32",
            "tokens per group n, k per expert": "n = 400, k = 28 (k/n = 0.07)",
            "capacity factor": "2.24 (= 32 x 28 / 400)",
            "router": "Dykstra, p = 2, 10 iterations; lam not stated",
            "optimiser, lr": "Adam, peak 1e-3, 10k warm-up steps, linear decay, weight decay 0.1",
            "batch": "4,096",
            "steps": "7 epochs of JFT-300M (~500k)",
            "seeds": "1",
            "device": "TPUv2-128",
        },
        ours={
            "data": "p_dataset",
            "pixel noise": "p_noise_std",
            "experts": "p_experts",
            "capacity factor": "p_capacity_factor",
            "patch": "p_patch",
            "depth": "p_depth",
            "width": "p_width",
            "lam": "p_lam",
            "router iterations": "p_max_iter",
            "optimiser, lr": "p_lr",
            "batch": "p_batch",
            "steps": "p_steps",
            "seeds": "seed",
            "backend": "backend",
            "device": "device_name",
        },
    ),
)


def _per_trial(table: pd.DataFrame, metric: str, late: bool = False, how: str = "mean") -> pd.DataFrame:
    """One row per trial: ``how`` of ``metric`` over its records (the last quarter of the steps with ``late``)."""
    rows = ok_rows(table)
    rows = rows[rows["metric"] == metric]
    if late and not rows.empty:
        rows = rows[rows["step"] >= _LATE * rows["p_steps"]]
    if rows.empty:
        return rows.assign(label=pd.Series(dtype=str), final=pd.Series(dtype=float))
    carried = ["backend", "device_kind", "device_name", "params", "seed"] + [
        c for c in rows.columns if c.startswith("p_")
    ]
    out = (
        rows.sort_values("step")
        .groupby("trial_key", sort=False)
        .agg(value=("value", how), final=("value", "last"), **{c: (c, "first") for c in carried})
        .reset_index()
    )
    return out.assign(label=out.apply(_label, axis=1))


def _comparisons(trials: pd.DataFrame):
    """(backend, device, relaxed label, rows of hard and that relaxed router in one shared setting)."""
    if trials.empty:
        return
    setup = [c for c in trials.columns if c.startswith("p_") and c not in _SETUP_EXCLUDED]
    for (backend, device, *_), g in trials.groupby(["backend", "device_name", *setup], dropna=False):
        for label in sorted(set(g.loc[g["p_router"] == "relaxed", "label"])):
            yield backend, device, label, g[g["label"].isin(["hard", label])]


def _routing_shape(rows: pd.DataFrame) -> str:
    """k and n of the run's expert-choice routing, from its patch, experts and capacity factor."""
    first = rows.iloc[0]
    side = {"digits": 8, "mnist": 28, "cifar10": 32}[first["p_dataset"]]
    n = (side // int(first["p_patch"])) ** 2 + 1
    moe = MoEConfig(experts=int(first["p_experts"]), capacity_factor=float(first["p_capacity_factor"]))
    k = moe.capacity(n)
    return (
        f"{first['p_experts']:g} experts, k = {k} of n = {n} tokens (k/n {k / n:.3f}; thesis 32 experts, 28/400 = 0.07)"
    )


def _deviations(rows: pd.DataFrame) -> str:
    first = rows.iloc[0]
    noise = f" with pixel noise std {float(first['p_noise_std']):g}" if float(first["p_noise_std"]) else ""
    return (
        f"{first['p_dataset']}{noise} instead of JFT-300M; {_routing_shape(rows)}; a {int(first['p_depth'])}-block "
        f"ViT of width {int(first['p_width'])}, {int(first['p_steps'])} steps of batch {int(first['p_batch'])}, "
        f"constant Adam lr {float(first['p_lr']):g} without weight decay"
    )


def _improves(label: str):
    """Relaxed minus hard precision-at-1 over the last quarter of the steps, paired over seeds, above 0."""
    return gain_over_hard(
        label,
        "hard",
        relaxed=label,
        column="value",
        difference="relaxed - hard precision-at-1 over the last quarter of the steps",
        medians="medians",
        missing="no seed ran both routers",
    )


def _not_saturated(rows: pd.DataFrame) -> str | None:
    hard = rows.loc[rows["label"] == "hard", "value"]
    if hard.empty:
        return "no hard-router run"
    level = float(hard.median())
    return f"the hard router is saturated (precision {level:.3f} >= {_SATURATED})" if level >= _SATURATED else None


def _overhead(label: str):
    def test(rows: pd.DataFrame) -> tuple[bool | str | None, str]:
        paired = pairs(rows, "label", label, "hard")
        if paired.empty:
            return None, "no seed ran both routers"
        interval = paired_interval(np.log(paired["first"]), np.log(paired["second"]))
        ratio = [np.exp(v) for v in (interval.mean, interval.low, interval.high)]
        return interval.side("below", np.log(2.0)), (
            f"step time relaxed / hard = {ratio[0]:.2f}x [{ratio[1]:.2f}, {ratio[2]:.2f}] (95% CI, {interval.n} pairs)"
        )

    return test


def checks(table: pd.DataFrame) -> list[Check]:
    """Relaxed router: better late precision than hard (paired over seeds), sparse combine weights, step time <= 2x."""
    out: list[Check] = []
    claim = (
        "the differentiable a.e. top-k router improves validation precision-at-1 over the hard top-k router "
        "in the last training steps (Fig. 7.7): relaxed minus hard, averaged over the last quarter of the "
        "steps and paired over seeds, is above 0"
    )
    for backend, device, label, rows in _comparisons(_per_trial(table, "precision_at_1", late=True)):
        out.append(
            decide(
                f"{label} vs hard: precision-at-1, {backend} ({device})",
                claim,
                rows,
                _improves(label),
                needs=(
                    seeds(5),
                    at_least("p_steps", _MIN_STEPS, "steps"),
                    at_least("p_experts", _MIN_EXPERTS, "experts"),
                    _not_saturated,
                ),
                figure="Fig. 7.7",
                note=_deviations(rows),
            )
        )
    if not out:
        out.append(
            decide(
                "relaxed vs hard: precision-at-1",
                claim,
                table.iloc[0:0],
                _improves("relaxed"),
                figure="Fig. 7.7",
                missing="needs hard and relaxed runs of the same setting",
            )
        )
    claim = (
        "the relaxed router's combine weights stay sparse (section 7.6: a sparse and differentiable top-k): "
        "their non-zero fraction after training is below 0.5"
    )
    sparse = _per_trial(table, "router_nnz_frac", late=True)
    sparse = sparse[sparse["p_router"] == "relaxed"] if not sparse.empty else sparse
    groups = list(sparse.groupby(["backend", "device_name", "label"])) if not sparse.empty else []
    for (backend, device, label), g in groups:
        out.append(
            decide(
                f"{label} combine weights sparse, {backend} ({device})",
                claim,
                g,
                lambda r: (
                    bool(r["final"].max() < 0.5),
                    f"largest non-zero fraction {r['final'].max():.3f} over {len(r)} trial(s)",
                ),
                needs=(at_least("p_steps", 100, "steps"),),
                figure="section 7.6",
            )
        )
    if not groups:
        out.append(
            decide(
                "relaxed combine weights sparse",
                claim,
                sparse,
                lambda r: (None, ""),
                figure="section 7.6",
                missing="no relaxed run",
            )
        )
    claim = (
        "relaxed routing costs about 1.5x hard routing per step (Fig. 7.7: 15 h vs 10 h): the paired ratio "
        "of median step times is below 2x"
    )
    for backend, device, label, rows in _comparisons(_per_trial(table, "step_time_s", how="median")):
        cpu = (rows["device_kind"] == "cpu").any()
        out.append(
            decide(
                f"{label} vs hard: step time, {backend} ({device})",
                claim,
                rows,
                _overhead(label),
                needs=(seeds(3), at_least("p_steps", 20, "steps")),
                figure="Fig. 7.7",
                note="CPU wall times (thesis: TPUv2-128), indicative only" if cpu else "",
            )
        )
    return out


smoke = Params(
    router="relaxed", steps=6, eval_every=3, batch=32, width=32, heads=2, mlp_dim=64, train_size=256, eval_batch=32
)
