"""attention_stochasticity: do a trained Transformer's softmax attention matrices become doubly stochastic?

Trains the one-layer, one-head attention-only ViT of Fig. 5.2 (left) and Fig. 5.6 (the Sinkformers
``ViT_only_Att``: patch embedding, class token, N(0, 1) positions, pre-norm attention with a 64-wide
head and an output projection, no MLP, class-token head) or a small ViT with MLPs, with softmax or
Sinkhorn attention, on a real data set (scikit-learn's digits by default; MNIST when it is on
disk). Before training (epoch 0) and after every epoch it records, on a fixed batch of test images,
the distribution of the attention matrices' column sums and their rows' deviation from 1, per layer
and head (tag ``layer<l>/head<h>``) and pooled (tag ``all``), beside the accuracies, the optimiser
steps taken and the epoch time. The class token is a row and a column like any patch. Thesis
chapter 5: Fig. 5.2 (column sums over epochs), Fig. 5.5 (accuracy, ViT vs Sinkformer), Fig. 5.6
(accuracy vs patch size, attention-only).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Literal

import numpy as np
import pandas as pd
import pydantic

from backends import Backend
from backends.datasets import DATASETS, DatasetUnavailable, load_images
from backends.vit_init import ViTConfig
from harness.checks import Check, at_least, decide, distinct, paired_interval, seeds
from harness.figures import Figure, Setting
from harness.training import passes
from harness.workload import Context, Float, Metric, OnlyIf, Record, Skip
from harness.workload import Params as _Params

name = "attention_stochasticity"
version = 2
backends = ("torch", "jax")
_COL = "column sums over the evaluation batch"
metrics = (
    Metric("colsum_q05", "1", "higher", "last", f"5th percentile of the {_COL}"),
    Metric("colsum_q25", "1", "higher", "last", f"25th percentile of the {_COL}"),
    Metric("colsum_q50", "1", "higher", "last", f"median of the {_COL}"),
    Metric("colsum_q75", "1", "lower", "last", f"75th percentile of the {_COL}"),
    Metric("colsum_q95", "1", "lower", "last", f"95th percentile of the {_COL}"),
    Metric("colsum_frac_within_0.1", "fraction", "higher", "last", "share of columns whose sum is within 0.1 of 1"),
    Metric("colsum_max_abs_dev", "1", "lower", "last", "largest |column sum - 1|"),
    Metric("rowsum_max_abs_dev", "1", "lower", "last", "largest |row sum - 1|"),
    Metric("train_accuracy", "fraction", "higher", "last", "running accuracy over the epoch's minibatches"),
    Metric("train_loss", "nats", "lower", "last", "mean cross-entropy over the epoch's minibatches"),
    Metric("test_accuracy", "fraction", "higher", "last", "accuracy on the whole test split"),
    Metric("train_steps", "1", "higher", "last", "optimiser steps taken since initialisation"),
    Metric("epoch_time_s", "s", "lower", "median", "wall time of one training epoch (compilation excluded)"),
)
_ATTENTION_METRICS = [m.name for m in metrics[:8]]
_SINKHORN_ONLY = ("sinkhorn_iters", "sinkhorn_grad")
_IF_SINKHORN = OnlyIf(normalization=["sinkhorn"])
_IF_VIT = OnlyIf(model=["vit"])
"""The attention-only model has one layer, one head and no MLP."""
_THESIS_STEPS_PER_EPOCH = 2000
"""Fig. 5.2: 2,000 minibatches of 10 MNIST images an epoch (``mnist.py`` of https://github.com/michaelsdr/sinkformers)."""


class Params(_Params):
    """Model, attention normalisation, data set and training of one run (thesis chapter 5)."""

    model: Literal["vit", "attention_only"] = pydantic.Field(
        "vit", description="vit: pre-norm blocks with MLPs; attention_only: one layer, one head, no MLP (Fig. 5.2, 5.6)"
    )
    normalization: Literal["softmax", "sinkhorn"] = "softmax"
    sinkhorn_iters: Annotated[pydantic.PositiveInt | None, _IF_SINKHORN] = pydantic.Field(
        3, le=1000, description="row/column normalisations; 1 is the softmax, odd ends on rows (eq. 5.3)"
    )
    sinkhorn_grad: Annotated[Literal["unroll", "implicit"] | None, _IF_SINKHORN] = pydantic.Field(
        "unroll", description="back-propagate through the iterations, or implicit differentiation at the fixed point"
    )
    dataset: Literal["digits", "mnist", "cifar10"] = pydantic.Field(
        "digits",
        description="digits ships with scikit-learn; mnist/cifar10 are read from disk, never downloaded by default",
    )
    train_size: pydantic.PositiveInt | None = pydantic.Field(
        None, description="use the first N training images (None: all); Fig. 5.2 used 20,000 MNIST images an epoch"
    )
    patch: pydantic.PositiveInt = pydantic.Field(2, description="patch side in pixels; must divide the image side")
    depth: Annotated[pydantic.PositiveInt | None, _IF_VIT] = pydantic.Field(2, le=64)
    heads: Annotated[pydantic.PositiveInt | None, _IF_VIT] = pydantic.Field(4, le=64)
    width: pydantic.PositiveInt = pydantic.Field(64, le=4096, description="token width")
    head_dim: pydantic.PositiveInt | None = pydantic.Field(
        None, le=4096, description="width of one head (None: width / heads, which heads must divide); Sinkformers: 64"
    )
    mlp_dim: Annotated[pydantic.PositiveInt | None, _IF_VIT] = pydantic.Field(128, le=16384)
    epochs: pydantic.PositiveInt = pydantic.Field(10, le=1000)
    lr: Float = pydantic.Field(1e-3, gt=0, le=10)
    batch: pydantic.PositiveInt = 64
    optimizer: Literal["adam", "sgd"] = "adam"
    eval_batch: pydantic.PositiveInt = pydantic.Field(100, description="test images whose attention is recorded")
    dtype: Literal["float32", "float64"] = "float32"


def _config(params: Params, image_size: int, channels: int, num_classes: int) -> ViTConfig:
    """The architecture of ``params``; Skip for combinations it cannot build."""
    if image_size % params.patch:
        raise Skip(f"patch={params.patch} does not divide the {params.dataset} image side {image_size}")
    heads = params.heads or 1
    if params.head_dim is None and params.width % heads:
        raise Skip(f"heads={heads} does not divide width={params.width} (set head_dim)")
    common = dict(
        image_size=image_size,
        channels=channels,
        num_classes=num_classes,
        patch=params.patch,
        width=params.width,
        dim_head=params.head_dim,
        normalization=params.normalization,
        sinkhorn_iters=params.sinkhorn_iters or 1,
        implicit=params.sinkhorn_grad == "implicit",
    )
    if params.model == "attention_only":
        return ViTConfig.attention_only(**common)
    return ViTConfig(depth=params.depth, heads=heads, mlp_dim=params.mlp_dim, **common)


def _attention_records(maps: list[np.ndarray], step: int) -> list[Record]:
    """Column/row-sum statistics per layer and head (tag ``layer<l>/head<h>``) and pooled (``all``)."""

    def stats(cols: np.ndarray, rows: np.ndarray, tag: str) -> list[Record]:
        q = np.quantile(cols, [0.05, 0.25, 0.5, 0.75, 0.95])
        values = [*q, np.mean(np.abs(cols - 1.0) <= 0.1), np.max(np.abs(cols - 1.0)), np.max(np.abs(rows - 1.0))]
        return [Record(m, float(v), step=step, tag=tag) for m, v in zip(_ATTENTION_METRICS, values)]

    out, all_cols, all_rows = [], [], []
    for layer, weights in enumerate(maps):  # (B, H, T, T)
        cols, rows = weights.sum(axis=-2), weights.sum(axis=-1)
        for head in range(weights.shape[1]):
            out += stats(cols[:, head].ravel(), rows[:, head].ravel(), f"layer{layer}/head{head}")
        all_cols.append(cols.ravel())
        all_rows.append(rows.ravel())
    return out + stats(np.concatenate(all_cols), np.concatenate(all_rows), "all")


def run(params: Params, backend: Backend, ctx: Context) -> list[Record]:
    """Train; before training and after each epoch record attention sums, accuracies, steps, epoch time."""
    try:
        data = load_images(params.dataset)
    except DatasetUnavailable as missing:
        raise Skip(str(missing)) from None
    config = _config(params, data.image_size, data.channels, data.num_classes)
    n_train = min(params.train_size or len(data.train_y), len(data.train_y))
    if params.batch > n_train:
        raise Skip(f"batch={params.batch} is larger than the {n_train} training images")
    device = backend.device(ctx.device)
    train_x = backend.asarray(data.train_x[:n_train], device, params.dtype)
    train_y = backend.asarray(data.train_y[:n_train], device)
    test_x = backend.asarray(data.test_x, device, params.dtype)
    eval_x = backend.asarray(data.test_x[: params.eval_batch], device, params.dtype)
    ops = backend.ops
    trainer = ops.vit_trainer(config, ops.vit_init(config, ctx.seed, device, params.dtype), params.lr, params.optimizer)

    def evaluate(step: int) -> list[Record]:
        accuracy = float(np.mean(trainer.predict(test_x) == data.test_y))
        return _attention_records(trainer.attention(eval_x), step) + [Record("test_accuracy", accuracy, step=step)]

    records = evaluate(0)
    trainer.compile(train_x, train_y, params.batch)
    rng = np.random.default_rng(ctx.seed)
    steps_per_epoch = n_train // params.batch
    orders = ((epoch, rng.permutation(n_train)) for epoch in range(1, params.epochs + 1))
    fit = lambda _, order: trainer.fit_epoch(train_x, train_y, order, params.batch)
    for done in passes(backend, ctx.device, fit, orders, lr=params.lr):
        records += [
            Record("epoch_time_s", done.seconds, step=done.step),
            Record("train_loss", done.loss, step=done.step),
            Record("train_accuracy", done.accuracy, step=done.step),
            Record("train_steps", float(done.step * steps_per_epoch), step=done.step),
        ] + evaluate(done.step)
        ctx.logger.debug("epoch %d: loss %.4f, %.1f s", done.step, done.loss, done.seconds)
    return records


# ------------------------------------------------------------------------------------------ figures

_SUMS = ("colsum_q05", "colsum_q25", "colsum_q50", "colsum_q75", "colsum_q95")
_SOFTMAX_POOLED = {"p_normalization": "softmax", "tag": "all"}

figures = (
    Figure(
        "Softmax attention's column sums per epoch, attention-only model (box 25-75 %, whiskers 5-95 %)",
        metric=_SUMS,
        x="step",
        thesis="Fig. 5.2",
        kind="box",
        by_step=True,
        facet="p_dataset",
        where={**_SOFTMAX_POOLED, "p_model": "attention_only"},
        log_y=True,
        hline=1.0,
        x_title="epoch (0 = initialisation)",
        y_title="column sum",
    ),
    Figure(
        "Share of softmax attention's columns summing to 1 +/- 0.1 per epoch (the Fig. 5.2 check)",
        metric="colsum_frac_within_0.1",
        x="step",
        thesis="Fig. 5.2",
        by_step=True,
        series=("p_model",),
        facet="p_dataset",
        where=_SOFTMAX_POOLED,
        x_title="epoch (0 = initialisation)",
        y_title="share of columns within 0.1 of 1",
    ),
    Figure(
        "Softmax attention's column sums per epoch, ViT with MLPs, all layers and heads (beyond the thesis)",
        metric=_SUMS,
        x="step",
        kind="box",
        by_step=True,
        facet="p_dataset",
        where={**_SOFTMAX_POOLED, "p_model": "vit"},
        log_y=True,
        hline=1.0,
        x_title="epoch (0 = initialisation)",
        y_title="column sum",
    ),
    Figure(
        "Train and test accuracy per epoch, Transformer vs Sinkformer (thesis: cats and dogs; here digits)",
        metric=("train_accuracy", "test_accuracy"),
        x="step",
        thesis="Fig. 5.5",
        by_step=True,
        series=("p_normalization", "p_sinkhorn_iters"),
        facet="p_model",
        x_title="epoch",
        y_title="accuracy",
    ),
    Figure(
        "Final test accuracy vs patch size, attention-only model",
        metric="test_accuracy",
        x="p_patch",
        thesis="Fig. 5.6",
        series=("p_normalization", "p_sinkhorn_iters"),
        facet="p_dataset",
        where={"p_model": "attention_only"},
        log_x=True,
        x_title="patch side (pixels)",
        y_title="test accuracy",
    ),
    Figure(
        "Epoch time vs Sinkhorn iterations (1 iteration is the softmax)",
        metric="epoch_time_s",
        x="p_sinkhorn_iters",
        series=("p_model",),
        where={"p_normalization": "sinkhorn"},
        log_x=True,
        log_y=True,
        x_title="Sinkhorn iterations",
    ),
)

_OURS = {
    "model": "p_model",
    "data": "p_dataset",
    "patch": "p_patch",
    "width": "p_width",
    "head width": "p_head_dim",
    "depth": "p_depth",
    "heads": "p_heads",
    "attention": "p_normalization",
    "Sinkhorn iterations": "p_sinkhorn_iters",
    "optimiser": "p_optimizer",
    "lr": "p_lr",
    "batch": "p_batch",
    "training images": "p_train_size",
    "epochs": "p_epochs",
    "seeds": "seed",
    "device": "device_name",
}
settings = (
    Setting(
        "Fig. 5.2",
        thesis={
            "model": "attention-only ViT (sinkformers ViT_only_Att)",
            "data": "MNIST (60,000 train)",
            "patch": "7 (16 patches + class token)",
            "width": "128",
            "head width": "64",
            "depth": "1",
            "heads": "1",
            "attention": "softmax",
            "optimiser": "Adam",
            "lr": "2e-3 (/10 at epoch 25)",
            "batch": "10",
            "training images": "20,000 an epoch (2,000 steps)",
            "epochs": "30 (1-20 shown)",
            "seeds": "1",
            "device": "GPU",
        },
        ours=_OURS,
        where={"p_model": "attention_only", "p_normalization": "softmax"},
    ),
    Setting(
        "Fig. 5.5",
        thesis={
            "model": "ViT",
            "data": "cats and dogs",
            "patch": "16",
            "depth": "6",
            "heads": "8",
            "attention": "softmax vs Sinkhorn",
            "Sinkhorn iterations": "3",
            "optimiser": "Adam",
            "lr": "5e-5 (/10 at epoch 250)",
            "batch": "64",
            "epochs": "300",
            "seeds": "5",
            "device": "V100 GPU",
        },
        ours=_OURS,
        where={"p_model": "vit"},
    ),
    Setting(
        "Fig. 5.6",
        thesis={
            "model": "attention-only ViT (sinkformers ViT_only_Att)",
            "data": "MNIST",
            "patch": "1, 2, 4, 7, 14, 28",
            "width": "128",
            "head width": "64",
            "depth": "1",
            "heads": "1",
            "attention": "softmax vs Sinkhorn",
            "Sinkhorn iterations": "5",
            "optimiser": "Adam",
            "lr": "1e-3 softmax, 2e-3 Sinkhorn (/10 at epochs 35 and 41)",
            "batch": "100",
            "epochs": "45",
            "seeds": "5",
            "device": "GPU",
        },
        ours=_OURS,
        where={"p_model": "attention_only"},
    ),
)


# ------------------------------------------------------------------------------------------- checks


def checks(table: pd.DataFrame) -> list[Check]:
    """The thesis' claims on the measured rows: Fig. 5.2 (and beyond it, the ViT), eq. 5.3, Fig. 5.6, sec. 5.6.4."""
    ok = table[table["status"] == "ok"] if "status" in table else table
    return (
        _concentrate_checks(ok, "attention_only")
        + _skipped_fig52(table)
        + _concentrate_checks(ok, "vit")
        + _converged_checks(ok)
        + _patch_checks(ok)
        + _overhead_checks(ok)
    )


def _skipped_fig52(table: pd.DataFrame) -> list[Check]:
    """A Fig. 5.2 data set whose every trial was skipped (MNIST not on disk) reads not measured, with the reason."""
    if "status" not in table:
        return []
    fig = table[(table["p_model"] == "attention_only") & (table["p_normalization"] == "softmax")]
    measured = set(fig[fig["status"] == "ok"]["p_dataset"])
    skipped = fig[(fig["status"] == "skipped") & ~fig["p_dataset"].isin(measured)]
    return [
        decide(
            f"Fig. 5.2 column sums, attention-only model, {dataset}",
            _CONCENTRATE_CLAIM,
            g.iloc[0:0],
            lambda r: (None, ""),
            figure="Fig. 5.2",
            missing=f"skipped: {g['error'].dropna().iloc[0]}" if g["error"].notna().any() else "skipped",
        )
        for (dataset,), g in _groups(skipped, ["p_dataset"])
    ]


def _key(params_json: str, drop: tuple[str, ...]) -> str:
    """The parameters without ``drop``: what two trials compared side by side share."""
    return json.dumps({k: v for k, v in json.loads(params_json).items() if k not in drop}, sort_keys=True)


def _varying(rows: pd.DataFrame, group: pd.DataFrame, skip: tuple[str, ...]) -> str:
    """`` name=value`` of ``group`` for each parameter that varies across ``rows``'s configurations."""
    cols = [c for c in rows.columns if c.startswith("p_") and c not in skip and rows[c].astype(str).nunique() > 1]
    return "".join(f" {c[2:]}={group.iloc[0][c]}" for c in cols)


def _groups(rows: pd.DataFrame, by: list[str]) -> list[tuple[tuple, pd.DataFrame]]:
    return list(rows.groupby(by, dropna=False, sort=True)) if not rows.empty else []


_CONCENTRATE_CLAIM = (
    'Fig. 5.2: "the learning process makes the attention matrices more and more doubly '
    'stochastic" ("the majority of columns naturally sum closely to 1"): the share of softmax '
    "columns summing to 1 +/- 0.1 is larger at the last epoch than at epoch 1 (paired over seeds)"
)


def _concentrate_checks(table: pd.DataFrame, model: str) -> list[Check]:
    rows = table[
        (table["metric"] == "colsum_frac_within_0.1")
        & (table["tag"] == "all")
        & (table["p_normalization"] == "softmax")
        & (table["p_model"] == model)
    ]
    thesis = model == "attention_only"
    title = "Fig. 5.2 column sums, attention-only model" if thesis else "column sums, ViT with MLPs (beyond the thesis)"
    if rows.empty:
        return [
            decide(
                title,
                _CONCENTRATE_CLAIM,
                rows,
                lambda r: (None, ""),
                figure="Fig. 5.2" if thesis else "",
                missing=f"no softmax {model} trial",
            )
        ]
    steps = table[table["metric"] == "train_steps"]
    out = []
    for (backend, device, params), g in _groups(rows, ["backend", "device_name", "params"]):
        last_steps = steps[(steps["backend"] == backend) & (steps["params"] == params)]["value"].max()
        out.append(
            decide(
                f"{title}, {g.iloc[0]['p_dataset']} ({backend}, {device}){_varying(rows, g, ('p_dataset',))}",
                _CONCENTRATE_CLAIM,
                g,
                _later_than_first,
                figure="Fig. 5.2" if thesis else "",
                needs=(seeds(3), at_least("p_epochs", 4, "epochs")),
                note=_concentrate_note(g.iloc[0], last_steps, thesis),
            )
        )
    return out


def _later_than_first(rows: pd.DataFrame) -> tuple[bool | str | None, str]:
    """Paired (per seed) difference of the share at the last epoch and at epoch 1."""
    per_seed = rows.pivot_table(index="seed", columns="step", values="value")
    if 1 not in per_seed or per_seed.columns.max() <= 1:
        return None, "needs epoch 1 and a later epoch"
    last = int(per_seed.columns.max())
    pair = per_seed[[1, last]].dropna()
    interval = paired_interval(pair[last], pair[1])
    shown = [e for e in (0, 1, 4, 8, 12, 16, 20, last) if e in per_seed]
    means = ", ".join(f"epoch {e} {per_seed[e].mean():.2f}" for e in dict.fromkeys(shown))
    return interval.side("above"), f"epoch {last} - epoch 1: {interval.text('+.3f')}; mean share: {means}"


def _concentrate_note(first: pd.Series, last_steps: float, thesis: bool) -> str:
    per_epoch = first["p_train_size"] if pd.notna(first.get("p_train_size")) else None
    batch = int(first["p_batch"])
    epochs = int(first["p_epochs"])
    steps_epoch = int(last_steps) // epochs if pd.notna(last_steps) and epochs else None
    text = (
        f"{first['p_dataset']}: {steps_epoch:,} steps of batch {batch} an epoch, {int(last_steps):,} in all"
        if steps_epoch
        else f"{first['p_dataset']}: batch {batch}"
    )
    text += (
        f" = {last_steps / _THESIS_STEPS_PER_EPOCH:.1f} thesis epochs (MNIST, 2,000 steps of batch 10 an epoch, "
        "epochs 1-20 shown)"
        if pd.notna(last_steps)
        else ""
    )
    if per_epoch:
        text += f"; {int(per_epoch):,} training images an epoch"
    text += "; column sums of the first test images (thesis: the first training batch of 10)"
    if not thesis:
        text += "; the thesis' Fig. 5.2 ViT is the attention-only model: this ViT with MLPs is beyond the thesis"
    elif first["p_dataset"] != "mnist" or int(first["p_batch"]) != 10:
        text += "; thesis: MNIST, patch 7, batch 10, Adam lr 2e-3"
        if int(first["p_batch"]) != 10 or float(first["p_lr"]) != 2e-3 or first["p_optimizer"] != "adam":
            text += (
                f"; this run's recipe ({first['p_optimizer']}, lr {float(first['p_lr']):g}, batch {batch}) "
                "is not the thesis' Fig. 5.2 recipe"
            )
    return text


def _converged_checks(table: pd.DataFrame) -> list[Check]:
    claim = (
        "Sinkhorn's algorithm (eq. 5.3) makes attention doubly stochastic: with 21 or more iterations every "
        "column sum is within 1e-3 of 1, at every epoch"
    )
    rows = table[
        (table["metric"] == "colsum_max_abs_dev") & (table["tag"] == "all") & (table["p_normalization"] == "sinkhorn")
    ]
    rows = rows[rows["p_sinkhorn_iters"].fillna(0) >= 21]
    needs = (at_least("p_epochs", 5, "epochs"),)  # attention sharpens as it trains: later epochs are the test
    if rows.empty:
        return [
            decide(
                "Sinkhorn >= 21 iterations",
                claim,
                rows,
                lambda r: (None, ""),
                figure="eq. 5.3",
                missing="no Sinkhorn trial with 21 or more iterations",
            )
        ]

    def test(g: pd.DataFrame) -> tuple[bool, str]:
        worst = g.loc[g["value"].idxmax()]
        return bool(g["value"].max() <= 1e-3), (
            f"largest |column sum - 1| {g['value'].max():.2e} over {g['trial_key'].nunique()} trials "
            f"(at {int(worst['p_sinkhorn_iters'])} iterations, epoch {int(worst['step'])})"
        )

    return [
        decide(
            f"Sinkhorn >= 21 iterations, {backend} {dtype} ({device})", claim, g, test, needs=needs, figure="eq. 5.3"
        )
        for (backend, device, dtype), g in _groups(rows, ["backend", "device_name", "p_dtype"])
    ]


def _final(rows: pd.DataFrame, reduce: Callable[[pd.Series], float]) -> pd.DataFrame:
    """One value per trial: ``reduce`` of its values ordered by step."""
    keys = [
        "trial_key",
        "backend",
        "device_name",
        "params",
        "seed",
        "p_normalization",
        "p_sinkhorn_iters",
        "p_patch",
        "p_dataset",
        "p_model",
        "p_epochs",
        "p_lr",
    ]
    ordered = rows.sort_values("step")
    return ordered.groupby(keys, dropna=False)["value"].agg(reduce).reset_index()


def _sinkhorn_vs_softmax(final: pd.DataFrame, drop: tuple[str, ...]) -> pd.DataFrame:
    """Sinkhorn trials beside the softmax trial with the same seed and parameters other than ``drop``."""
    if final.empty:
        return final
    final = final.assign(key=final["params"].map(lambda p: _key(p, ("normalization", *_SINKHORN_ONLY, *drop))))
    soft = final[final["p_normalization"] == "softmax"][["backend", "device_name", "key", "seed", "value", "p_lr"]]
    sink = final[final["p_normalization"] == "sinkhorn"]
    return sink.merge(soft, on=["backend", "device_name", "key", "seed"], suffixes=("", "_softmax"))


def _patch_checks(table: pd.DataFrame) -> list[Check]:
    claim = (
        'Fig. 5.6: "when the patch size gets smaller [than the image], the two models are different and the '
        'Sinkformer outperforms the Transformer": final test accuracy, Sinkhorn minus softmax, paired over '
        "seeds and patch sizes, is above 0"
    )
    rows = table[(table["metric"] == "test_accuracy") & (table["p_model"] == "attention_only")]
    pairs = _sinkhorn_vs_softmax(_final(rows, lambda v: v.iloc[-1]), drop=("lr",))
    if not pairs.empty:
        pairs = pairs[pairs["p_patch"] < pairs["p_dataset"].map(lambda d: DATASETS[d][0])]
    if pairs.empty:
        return [
            decide(
                "Fig. 5.6 patch sizes",
                claim,
                pairs,
                lambda r: (None, ""),
                figure="Fig. 5.6",
                missing="no attention-only softmax/Sinkhorn pair below the image side",
            )
        ]

    def test(g: pd.DataFrame) -> tuple[bool | str, str]:
        interval = paired_interval(g["value"], g["value_softmax"])
        per_patch = g.groupby("p_patch")[["value", "value_softmax"]].median()
        text = "; ".join(f"patch {int(p)}: {r.value:.3f} vs {r.value_softmax:.3f}" for p, r in per_patch.iterrows())
        return interval.side("above"), f"Sinkhorn - softmax: {interval.text('+.3f')}; median per patch {text}"

    note = (
        "thesis: MNIST, batch 100, 45 epochs (27,000 steps), lr 1e-3 softmax / 2e-3 Sinkhorn divided by 10 at "
        "epochs 35 and 41, 5 iterations, 5 seeds; here a constant lr"
    )
    out = []
    for (backend, device, iters, dataset), g in _groups(
        pairs, ["backend", "device_name", "p_sinkhorn_iters", "p_dataset"]
    ):
        out.append(
            decide(
                f"Fig. 5.6 patch sizes, Sinkhorn {int(iters)}, {dataset} ({backend}, {device})",
                claim,
                g,
                test,
                figure="Fig. 5.6",
                note=note,
                needs=(
                    seeds(3),
                    distinct("p_patch", 2, "patch sizes below the image side"),
                    at_least("p_epochs", 10, "epochs"),
                ),
            )
        )
    return out


def _overhead_checks(table: pd.DataFrame) -> list[Check]:
    claim = (
        'Section 5.6.4: 3 Sinkhorn iterations lead "to a negligible computational overhead" (3m25s vs 3m20s '
        "an epoch on a V100): the epoch time ratio Sinkhorn-3 / softmax, minus 1, is below 0.1 (paired over seeds)"
    )
    rows = table[table["metric"] == "epoch_time_s"]
    pairs = _sinkhorn_vs_softmax(_final(rows, lambda v: float(v.median())), drop=())
    pairs = pairs[pairs["p_sinkhorn_iters"] == 3] if not pairs.empty else pairs
    if pairs.empty:
        return [
            decide(
                "Sinkhorn 3 overhead",
                claim,
                pairs,
                lambda r: (None, ""),
                figure="sec. 5.6.4",
                missing="no softmax/Sinkhorn-3 pair with equal other parameters",
            )
        ]

    def test(g: pd.DataFrame) -> tuple[bool | str, str]:
        interval = paired_interval(g["value"] / g["value_softmax"], np.ones(len(g)))
        return interval.side("below", 0.1), f"epoch time ratio - 1: {interval.text('+.3f')}"

    note = "thesis: a depth-6, 8-head ViT on cats and dogs on a V100; small models on a CPU pay more per iteration"
    return [
        decide(
            f"Sinkhorn 3 overhead, {model} ({backend}, {device})",
            claim,
            g,
            test,
            figure="sec. 5.6.4",
            note=note,
            needs=(seeds(3), at_least("p_epochs", 2, "epochs")),
        )
        for (backend, device, model), g in _groups(pairs, ["backend", "device_name", "p_model"])
    ]


smoke = Params(
    model="vit",
    normalization="sinkhorn",
    sinkhorn_iters=3,
    patch=4,
    depth=1,
    heads=2,
    width=16,
    mlp_dim=32,
    epochs=2,
    lr=3e-3,
    batch=32,
    eval_batch=32,
)
