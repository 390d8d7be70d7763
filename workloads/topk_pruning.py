"""topk_pruning: does a relaxed top-k train a magnitude-pruned MLP faster than the hard top-k?

An MLP (64-32-32-10 on scikit-learn's digits; 784-32-32-10 on MNIST where torchvision stored it)
whose weight matrices are W_i = topkmag(W'_i), keeping ``keep`` (10%) of each matrix's entries by
magnitude with the hard operator or the relaxed one of chapter 7 (p = 2 or 4/3, lam = 1e-4), or
not pruned (``dense``, the grey baseline of Fig. 7.5), trained by SGD on cross-entropy. Per epoch:
test error, training loss, the fraction of non-zero weights per matrix (the relaxed operator may
keep the few extra entries of its pooled block around k: ``extra_nnz`` counts them) and the epoch
time. Thesis chapter 7, section 7.6 ("Weight pruning"), Fig. 7.5, appendix 7.C.1.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import pydantic

from backends import Backend
from backends.datasets import DatasetUnavailable, load_images
from backends.pruned_mlp_init import PrunedMLPConfig
from harness.workload import Check, Context, Float, Metric, Params as _Params, Record, Skip
from results.aggregate import summarize

name = "topk_pruning"
version = 1
backends = ("torch", "jax")
metrics = (
    Metric("test_error", "fraction", "lower", "last", "misclassified test examples (epoch 0 = initialisation)"),
    Metric("train_loss", "nats", "lower", "last", "mean cross-entropy over the epoch's minibatches"),
    Metric("nnz_frac", "fraction", "lower", "max",
           "non-zero entries of the pruned weights / all entries, per matrix (tag w1, w2, ...) and pooled (all)"),
    Metric("extra_nnz", "entries", "lower", "max", "non-zero pruned weights beyond the k kept per matrix, summed (tag all)"),
    Metric("wall_s", "s", "lower", "median", "wall time of one training epoch (compilation excluded)"),
)


class Params(_Params):
    """Pruning operator, data and SGD of one run (thesis section 7.6, appendix 7.C.1)."""

    operator: Literal["dense", "hard", "relaxed"] = pydantic.Field(
        "relaxed", description="dense: no pruning (baseline); hard or relaxed top-k in magnitude")
    p: Float | None = pydantic.Field(2.0, description="relaxed only: 2 or 4/3 (regulariser lam/p ||y||_p^p)")
    lam: Float | None = pydantic.Field(1e-4, gt=0, description="relaxed only: regularisation strength")
    keep: Float | None = pydantic.Field(0.10, gt=0, le=1, description="fraction of each weight matrix kept (not dense)")
    hidden: pydantic.PositiveInt = pydantic.Field(32, le=65536, description="width of both hidden layers")
    train_size: pydantic.PositiveInt | None = pydantic.Field(None, description="use the first N training images (None: all)")
    epochs: pydantic.NonNegativeInt = pydantic.Field(30, le=100_000)
    lr: Float = pydantic.Field(1e-2, gt=0, le=10, description="SGD learning rate, constant")
    batch: pydantic.PositiveInt = 128
    dataset: Literal["digits", "mnist"] = pydantic.Field(
        "digits", description="digits ships with scikit-learn; mnist is read from disk, never downloaded by default")
    dtype: Literal["float32", "float64"] = "float32"

    @pydantic.model_validator(mode="before")
    @classmethod
    def _null_inapplicable(cls, data: dict) -> dict:
        if not isinstance(data, dict):
            return data
        operator = data.get("operator", "relaxed")
        if operator != "relaxed":
            data = {**data, "p": None, "lam": None}
        else:  # a null carried over from a hard or dense grid point means the default
            data = {**data, "p": 2.0 if data.get("p") is None else data["p"],
                    "lam": 1e-4 if data.get("lam") is None else data["lam"]}
        if operator == "dense":
            data = {**data, "keep": None}
        elif data.get("keep") is None:
            data = {**data, "keep": 0.10}
        return data

    @pydantic.field_validator("p")
    @classmethod
    def _p_allowed(cls, p: float | None) -> float | None:
        if p is not None and not (abs(p - 2.0) < 1e-12 or abs(p - 4.0 / 3.0) < 1e-12):
            raise ValueError(f"p={p!r}: allowed 2 or 4/3")
        return p


def _config(params: Params, inputs: int, classes: int) -> PrunedMLPConfig:
    relaxed = params.operator == "relaxed"
    return PrunedMLPConfig(sizes=(inputs, params.hidden, params.hidden, classes), operator=params.operator,
                           keep=params.keep or 1.0, lam=params.lam if relaxed else 1e-4, p=params.p if relaxed else 2.0)


def _sparsity(weights: list[np.ndarray], config: PrunedMLPConfig, step: int) -> list[Record]:
    nnz = [int(np.count_nonzero(w)) for w in weights]
    sizes = [w.size for w in weights]
    kept = [config.kept(i) if config.operator != "dense" else s for i, s in enumerate(sizes)]
    out = [Record("nnz_frac", n / s, step=step, tag=f"w{i + 1}") for i, (n, s) in enumerate(zip(nnz, sizes))]
    return out + [Record("nnz_frac", sum(nnz) / sum(sizes), step=step, tag="all"),
                  Record("extra_nnz", float(sum(max(n - k, 0) for n, k in zip(nnz, kept))), step=step, tag="all")]


def run(params: Params, backend: Backend, ctx: Context) -> list[Record]:
    """Train with SGD; before training and after each epoch record test error and sparsity."""
    try:
        data = load_images(params.dataset)
    except DatasetUnavailable as missing:
        raise Skip(str(missing)) from None
    n_train = min(params.train_size or len(data.train_y), len(data.train_y))
    if params.batch > n_train:
        raise Skip(f"batch={params.batch} is larger than the {n_train} training images")
    config = _config(params, int(np.prod(data.train_x.shape[1:])), data.num_classes)
    device, ops = backend.device(ctx.device), backend.ops
    x = backend.asarray(data.train_x[:n_train], device, params.dtype)
    y = backend.asarray(data.train_y[:n_train], device)
    x_test = backend.asarray(data.test_x, device, params.dtype)
    trainer = ops.pruned_mlp_trainer(config, ops.pruned_mlp_init(config, ctx.seed, device, params.dtype), params.lr)

    def evaluate(step: int) -> list[Record]:
        error = float(np.mean(trainer.predict(x_test) != data.test_y))
        return [Record("test_error", error, step=step)] + _sparsity(trainer.weights(), config, step)

    records = evaluate(0)
    trainer.compile(x, y, params.batch)
    rng = np.random.default_rng(np.random.SeedSequence([ctx.seed, 10]))
    for epoch in range(1, params.epochs + 1):
        order = rng.permutation(n_train)
        result: list[tuple[float, float]] = []
        seconds = backend.time_once(lambda: result.append(trainer.fit_epoch(x, y, order, params.batch)), ctx.device)
        loss = result[0][0]
        if not np.isfinite(loss):
            raise FloatingPointError(f"training loss is {loss} at epoch {epoch} (lr={params.lr})")
        records += [Record("train_loss", loss, step=epoch), Record("wall_s", seconds, step=epoch)] + evaluate(epoch)
        ctx.logger.debug("epoch %d: loss %.4f, %.2f s", epoch, loss, seconds)
    return records


# ----------------------------------------------------------------------------------------- report

_SETUP = ["p_keep", "p_hidden", "p_train_size", "p_epochs", "p_lr", "p_batch", "p_dataset", "p_dtype"]
"""Parameters that hard and relaxed runs compared in a check share (keep aside: dense has none)."""


def _label(row: pd.Series) -> str:
    if row["p_operator"] == "relaxed":
        p = "4/3" if abs(float(row["p_p"]) - 4 / 3) < 1e-9 else f"{float(row['p_p']):g}"
        return f"relaxed p={p} lam={float(row['p_lam']):g}"
    return str(row["p_operator"])


def _curves(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    steps = summarize(table, metrics, by_step=True)
    rows = steps[steps["metric"] == metric].copy()
    if not rows.empty:
        rows["label"] = rows.apply(_label, axis=1)
    return rows


def figures(table: pd.DataFrame) -> list:
    """Fig. 7.5: test error vs epoch and vs training time; non-zero fraction of the pruned weights per epoch."""
    import plotly.graph_objects as go

    error = _curves(table, "test_error")
    if error.empty:
        return []
    times = _curves(table, "wall_s")
    figs = []
    for x_axis in ("epoch", "time"):
        fig = go.Figure()
        keys = ["backend", "device_name", "label", "p_lr", "p_epochs", "p_dataset"]
        for (backend, device, label, lr, *_), g in error.groupby(keys, dropna=False):
            g = g.sort_values("step")
            x = g["step"]
            if x_axis == "time":
                t = times[(times["params"] == g["params"].iloc[0]) & (times["backend"] == backend)].sort_values("step")
                if t.empty:
                    continue
                x = pd.Series(np.concatenate([[0.0], np.cumsum(t["median"].to_numpy())]))[: len(g)]
            fig.add_trace(go.Scatter(x=x, y=g["median"], mode="lines+markers", name=f"{label} lr={lr:g} {backend} ({device})"))
        fig.update_layout(title=f"Fig. 7.5: test error vs {'epoch' if x_axis == 'epoch' else 'training time (s, median epoch times)'}"
                                ", 90% of the weights pruned by magnitude", xaxis_title="epoch" if x_axis == "epoch" else "s",
                          yaxis_title="test error")
        figs.append(fig)
    nnz = _curves(table, "nnz_frac")
    nnz = nnz[nnz["tag"] == "all"]
    if not nnz.empty:
        fig = go.Figure()
        for (backend, label, lr), g in nnz.groupby(["backend", "label", "p_lr"]):
            g = g.sort_values("step")
            fig.add_trace(go.Scatter(x=g["step"], y=g["median"], mode="lines", name=f"{label} lr={lr:g} {backend}"))
        fig.update_layout(title="Non-zero fraction of the pruned weights per epoch (all matrices)",
                          xaxis_title="epoch", yaxis_title="non-zero fraction")
        figs.append(fig)
    return figs


def _first_epoch_at(g: pd.DataFrame, level: float) -> int | None:
    hit = g[g["median"] <= level + 1e-12].sort_values("step")
    return None if hit.empty else int(hit["step"].iloc[0])


def checks(table: pd.DataFrame) -> list[Check]:
    """Relaxed top-k reaches the hard one's final test error in no more epochs; it keeps the 10% rate."""
    error = _curves(table, "test_error")
    out: list[Check] = []
    claim = ("the relaxed top-k reaches the hard top-k's final test error in no more epochs "
             "(it 'trains significantly faster', section 7.6, Fig. 7.5)")
    relaxed_all = error[error["p_operator"] == "relaxed"] if not error.empty else error
    if error.empty or relaxed_all.empty or (error["p_operator"] == "hard").sum() == 0:
        out.append(Check("relaxed vs hard", claim, None, "needs hard and relaxed runs"))
    else:
        for (backend, device, *setup), g in error.groupby(["backend", "device_name", *_SETUP], dropna=False):
            lr = dict(zip(_SETUP, setup))["p_lr"]
            hard = g[g["p_operator"] == "hard"]
            if hard.empty:
                continue
            ordered = hard.sort_values("step")["median"]
            final, initial = float(ordered.iloc[-1]), float(ordered.iloc[0])
            hard_at = _first_epoch_at(hard, final)
            for label, r in g[g["p_operator"] == "relaxed"].groupby("label"):
                if final >= initial:  # nothing to reach: the comparison would pass at epoch 0
                    out.append(Check(f"{label} vs hard, {backend} ({device}), lr={lr:g}", claim, None,
                                     f"the hard top-k did not learn (test error {initial:.3f} -> {final:.3f})"))
                    continue
                at = _first_epoch_at(r, final)
                passed = at is not None and at <= hard_at
                reached = "never" if at is None else f"at epoch {at}"
                out.append(Check(f"{label} vs hard, {backend} ({device}), lr={lr:g}", claim, passed,
                                 f"hard's final error {final:.3f} (first reached at epoch {hard_at}); relaxed: {reached} "
                                 f"(final {float(r.sort_values('step')['median'].iloc[-1]):.3f})"))
    final = summarize(table, metrics)
    nnz = final[(final["metric"] == "nnz_frac") & (final["tag"] == "all") & (final["p_operator"] == "relaxed")]
    claim = "the relaxed top-k maintains the rate of non-zero weights: max over epochs within 1 point of keep"
    if nnz.empty:
        out.append(Check("relaxed keeps the rate", claim, None, "no relaxed run"))
    for (backend, device, keep), g in nnz.groupby(["backend", "device_name", "p_keep"]):
        worst = float(g["median"].max())
        out.append(Check(f"relaxed keeps {keep:g}, {backend} ({device})", claim, bool(abs(worst - keep) <= 0.01),
                         f"largest non-zero fraction {worst:.4f}"))
    return out


smoke = Params(operator="hard", keep=0.10, train_size=256, epochs=2, lr=1e-1, batch=64)
