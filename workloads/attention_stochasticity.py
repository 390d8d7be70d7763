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
(accuracy vs patch size, attention-only). The checks live in ``_attention_stochasticity_checks``,
the figures and thesis settings in ``_attention_stochasticity_figures``; this module re-exports them.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
import pandas as pd
import pydantic

from backends import Backend
from backends.datasets import DatasetUnavailable, load_images
from backends.vit import ViTConfig
from core.checks import Check
from core.training import passes
from core.workload import Context, Float, Metric, OnlyIf, Record, Skip
from core.workload import Params as _Params
from workloads._attention_stochasticity_checks import attention_checks
from workloads._attention_stochasticity_figures import figures as figures
from workloads._attention_stochasticity_figures import settings as settings
from workloads._vit import image_arrays, vit_input

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
_IF_SINKHORN = OnlyIf(normalization=["sinkhorn"])
_IF_VIT = OnlyIf(model=["vit"])
"""The attention-only model has one layer, one head and no MLP."""


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
    common = vit_input(params, image_size, channels, num_classes)
    heads = params.heads or 1
    if params.head_dim is None and params.width % heads:
        raise Skip(f"heads={heads} does not divide width={params.width} (set head_dim)")
    common |= dict(
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
    n_train, device, train_x, train_y, test_x, eval_x = image_arrays(params, data, backend, ctx.device)
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


def checks(table: pd.DataFrame) -> list[Check]:
    """The thesis' claims on the measured rows: Fig. 5.2 (and beyond it, the ViT), eq. 5.3, Fig. 5.6, sec. 5.6.4."""
    return attention_checks(table)


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
