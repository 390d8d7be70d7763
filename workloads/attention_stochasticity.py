"""attention_stochasticity: do a trained Transformer's softmax attention matrices become doubly stochastic?

Trains a small ViT (or the one-layer, one-head attention-only model of Fig. 5.6) with softmax or
Sinkhorn attention on a real data set (scikit-learn's digits by default) and records, before
training (epoch 0) and after every epoch, on a fixed evaluation batch of test images, the
distribution of the attention matrices' column sums and their rows' deviation from 1, per layer
and head (tag ``layer<l>/head<h>``) and pooled (tag ``all``), beside the accuracies and the epoch
time. The class token is a row and a column like any patch. Thesis chapter 5: Fig. 5.2 (column sums over epochs), Fig. 5.3/5.5 (accuracy, softmax vs
Sinkhorn), Fig. 5.6 (accuracy vs patch size, attention-only).
"""
from __future__ import annotations

import json
from typing import Literal

import numpy as np
import pandas as pd
import pydantic

from backends import Backend
from backends.datasets import DATASETS, DatasetUnavailable, load_images
from backends.vit_init import ViTConfig
from harness.workload import Check, Context, Float, Metric, Params as _Params, Record, Skip
from results.aggregate import summarize

name = "attention_stochasticity"
version = 1
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
    Metric("epoch_time_s", "s", "lower", "median", "wall time of one training epoch (compilation excluded)"),
)
_ATTENTION_METRICS = [m.name for m in metrics[:8]]
_SINKHORN_ONLY = ("sinkhorn_iters", "sinkhorn_grad")
_ATTENTION_ONLY_NULLS = ("depth", "heads", "mlp_dim")


class Params(_Params):
    """Model, attention normalisation, data set and training of one run (thesis chapter 5)."""

    model: Literal["vit", "attention_only"] = pydantic.Field(
        "vit", description="vit: pre-norm blocks with MLPs; attention_only: one layer, one head, no MLP (Fig. 5.6)")
    normalization: Literal["softmax", "sinkhorn"] = "softmax"
    sinkhorn_iters: pydantic.PositiveInt | None = pydantic.Field(
        3, le=1000, description="row/column normalisations; 1 is the softmax, odd ends on rows (eq. 5.3)")
    sinkhorn_grad: Literal["unroll", "implicit"] | None = pydantic.Field(
        "unroll", description="back-propagate through the iterations, or implicit differentiation at the fixed point")
    dataset: Literal["digits", "mnist", "cifar10"] = pydantic.Field(
        "digits", description="digits ships with scikit-learn; mnist/cifar10 are read from disk, never downloaded by default")
    train_size: pydantic.PositiveInt | None = pydantic.Field(None, description="use the first N training images (None: all)")
    patch: pydantic.PositiveInt = pydantic.Field(2, description="patch side in pixels; must divide the image side")
    depth: pydantic.PositiveInt | None = pydantic.Field(2, le=64)
    heads: pydantic.PositiveInt | None = pydantic.Field(4, le=64)
    width: pydantic.PositiveInt = pydantic.Field(64, le=4096, description="token width; heads must divide it")
    mlp_dim: pydantic.PositiveInt | None = pydantic.Field(128, le=16384)
    epochs: pydantic.PositiveInt = pydantic.Field(10, le=1000)
    lr: Float = pydantic.Field(1e-3, gt=0, le=10)
    batch: pydantic.PositiveInt = 64
    optimizer: Literal["adam", "sgd"] = "adam"
    eval_batch: pydantic.PositiveInt = pydantic.Field(100, description="test images whose attention is recorded")
    dtype: Literal["float32", "float64"] = "float32"

    @pydantic.model_validator(mode="before")
    @classmethod
    def _null_inapplicable(cls, data: dict) -> dict:
        if not isinstance(data, dict):
            return data
        if data.get("normalization", "softmax") == "softmax":
            data = {**data, **dict.fromkeys(_SINKHORN_ONLY)}
        if data.get("model", "vit") == "attention_only":
            data = {**data, **dict.fromkeys(_ATTENTION_ONLY_NULLS)}
        return data


def _config(params: Params, image_size: int, channels: int, num_classes: int) -> ViTConfig:
    """The architecture of ``params``; Skip for combinations it cannot build."""
    if image_size % params.patch:
        raise Skip(f"patch={params.patch} does not divide the {params.dataset} image side {image_size}")
    heads = params.heads or 1
    if params.width % heads:
        raise Skip(f"heads={heads} does not divide width={params.width}")
    common = dict(image_size=image_size, channels=channels, num_classes=num_classes, patch=params.patch,
                  width=params.width, normalization=params.normalization,
                  sinkhorn_iters=params.sinkhorn_iters or 1, implicit=params.sinkhorn_grad == "implicit")
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
    """Train; before training and after each epoch record attention sums, accuracies, epoch time."""
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
    for epoch in range(1, params.epochs + 1):
        order = rng.permutation(n_train)
        result: list[tuple[float, float]] = []
        seconds = backend.time_once(lambda: result.append(trainer.fit_epoch(train_x, train_y, order, params.batch)),
                                    ctx.device)
        loss, accuracy = result[0]
        if not np.isfinite(loss):
            raise FloatingPointError(f"training loss is {loss} at epoch {epoch} (lr={params.lr})")
        records += [Record("epoch_time_s", seconds, step=epoch), Record("train_loss", loss, step=epoch),
                    Record("train_accuracy", accuracy, step=epoch)] + evaluate(epoch)
        ctx.logger.debug("epoch %d: loss %.4f, %.1f s", epoch, loss, seconds)
    return records


# ----------------------------------------------------------------------------------------- report

def _label(row: pd.Series) -> str:
    if row["p_normalization"] == "softmax":
        return "softmax"
    grad = " implicit" if row.get("p_sinkhorn_grad") == "implicit" else ""
    return f"sinkhorn {int(row['p_sinkhorn_iters'])}{grad}"


def _with_labels(df: pd.DataFrame) -> pd.DataFrame:
    if df.empty:
        return df
    df = df.copy()
    df["label"] = df.apply(_label, axis=1)
    return df


def _config_key(params_json: str, drop: tuple[str, ...]) -> str:
    """The parameters without ``drop``: what two trials compared side by side share."""
    return json.dumps({k: v for k, v in json.loads(params_json).items() if k not in drop}, sort_keys=True)


def _varying(df: pd.DataFrame, skip: tuple[str, ...]) -> list[str]:
    cols = [c for c in df.columns if c.startswith("p_") and c not in skip]
    return [c for c in cols if df[c].astype(str).nunique() > 1]


def figures(table: pd.DataFrame) -> list:
    """Fig. 5.2 column sums per epoch, Fig. 5.3 accuracy curves, Fig. 5.6 accuracy vs patch, time vs iterations."""
    import plotly.express as px
    import plotly.graph_objects as go

    steps = _with_labels(summarize(table, metrics, by_step=True))
    if steps.empty:
        return []
    figs = []
    pooled = steps[steps["tag"] == "all"]
    shown_backend = "torch" if "torch" in set(pooled["backend"]) else sorted(set(pooled["backend"]))[0]
    label_skip = ("p_normalization", "p_sinkhorn_iters", "p_sinkhorn_grad", "p_model")
    for model, rows in pooled[pooled["backend"] == shown_backend].groupby("p_model"):
        extra = _varying(rows, label_skip)
        fig = go.Figure()
        for params, g in rows.groupby("params", sort=False):
            wide = g.pivot_table(index="step", columns="metric", values="median").sort_index()
            if "colsum_q50" not in wide:
                continue
            first = g.iloc[0]
            name_ = first["label"] + "".join(f" {c[2:]}={first[c]}" for c in extra)
            fig.add_trace(go.Box(x=wide.index, q1=wide["colsum_q25"], median=wide["colsum_q50"], q3=wide["colsum_q75"],
                                 lowerfence=wide["colsum_q05"], upperfence=wide["colsum_q95"], name=name_))
        fig.add_hline(y=1.0, line_dash="dot")
        fig.update_layout(title=f"Fig. 5.2: attention column sums per epoch, {model} ({shown_backend}; "
                                "box 25-75%, whiskers 5-95%, all layers and heads)",
                          xaxis_title="epoch (0 = initialisation)", yaxis_title="column sum", boxmode="group")
        figs.append(fig)

    acc = steps[steps["metric"].isin(["test_accuracy", "train_accuracy"])]
    for model, rows in acc.groupby("p_model"):
        extra = _varying(rows, label_skip)
        fig = go.Figure()
        palette = px.colors.qualitative.Plotly
        for i, ((backend, params), run) in enumerate(rows.sort_values("label").groupby(["backend", "params"], sort=False)):
            first = run.iloc[0]
            name_ = f"{first['label']} {backend}" + "".join(f" {c[2:]}={first[c]}" for c in extra)
            for metric, g in run.groupby("metric"):
                g = g.sort_values("step")
                test = metric == "test_accuracy"
                fig.add_trace(go.Scatter(x=g["step"], y=g["median"], mode="lines+markers", legendgroup=name_,
                                         name=f"{name_} ({'test' if test else 'train'})",
                                         line=dict(dash="solid" if test else "dot", color=palette[i % len(palette)])))
        fig.update_layout(title=f"Fig. 5.3/5.5: accuracy per epoch, softmax vs Sinkhorn, {model} (train dotted, test solid)",
                          xaxis_title="epoch", yaxis_title="accuracy")
        figs.append(fig)

    final = _with_labels(summarize(table, metrics))
    att = final[(final["metric"] == "test_accuracy") & (final["p_model"] == "attention_only")]
    if not att.empty and att["p_patch"].nunique() > 1:
        att = att.assign(key=att["params"].map(lambda p: _config_key(p, ("patch", "normalization", *_SINKHORN_ONLY))))
        extra = _varying(att, (*label_skip, "p_patch"))
        fig = go.Figure()
        for (backend, label, _), g in att.groupby(["backend", "label", "key"]):
            g = g.sort_values("p_patch")
            name_ = f"{label} {backend}" + "".join(f" {c[2:]}={g.iloc[0][c]}" for c in extra)
            fig.add_trace(go.Scatter(x=g["p_patch"], y=g["median"], mode="lines+markers", name=name_,
                                     error_y=dict(type="data", symmetric=False, array=g["q75"] - g["median"],
                                                  arrayminus=g["median"] - g["q25"])))
        fig.update_layout(title="Fig. 5.6: final test accuracy vs patch size, attention-only model (median, IQR)",
                          xaxis_title="patch size (pixels)", yaxis_title="test accuracy")
        figs.append(fig)

    times = final[final["metric"] == "epoch_time_s"].copy()
    if not times.empty:
        times["key"] = times["params"].map(lambda p: _config_key(p, ("normalization", *_SINKHORN_ONLY)))
        extra = _varying(times, label_skip)
        fig = go.Figure()
        palette = px.colors.qualitative.Plotly
        for i, ((backend, device, _), g) in enumerate(times.groupby(["backend", "device_name", "key"])):
            first = g.iloc[0]
            base = f"{first['p_model']} {backend}" + "".join(f" {c[2:]}={first[c]}" for c in extra) + f" ({device})"
            color = palette[i % len(palette)]
            sink = g[g["p_normalization"] == "sinkhorn"].sort_values("p_sinkhorn_iters")
            soft = g[g["p_normalization"] == "softmax"]
            if not sink.empty:
                fig.add_trace(go.Scatter(x=sink["p_sinkhorn_iters"], y=sink["median"], mode="lines+markers",
                                         name=f"sinkhorn {base}", legendgroup=base, line=dict(color=color)))
            if not soft.empty:
                fig.add_trace(go.Scatter(x=[1] * len(soft), y=soft["median"], mode="markers", legendgroup=base,
                                         name=f"softmax {base}", marker=dict(symbol="star", size=12, color=color)))
        fig.update_layout(title="Epoch time vs Sinkhorn iterations (softmax: star at 1, where Sinkhorn equals it)",
                          xaxis_title="sinkhorn_iters", yaxis_title="median epoch time (s)", xaxis_type="log",
                          yaxis_type="log")
        figs.append(fig)
    return figs


def checks(table: pd.DataFrame) -> list[Check]:
    """The thesis' claims on the measured rows; each says plainly when it does not hold."""
    return _converged_check(table) + _rising_checks(table) + _patch_check(table) + _overhead_check(table)


def _converged_check(table: pd.DataFrame) -> list[Check]:
    claim = "with 21 or more Sinkhorn iterations every column sum is within 1e-3 of 1 (doubly stochastic), at every epoch"
    rows = table[(table["status"] == "ok") & (table["metric"] == "colsum_max_abs_dev") & (table["tag"] == "all")
                 & (table["p_normalization"] == "sinkhorn")]
    rows = rows[rows["p_sinkhorn_iters"].fillna(0) >= 21]
    if rows.empty:
        return [Check("sinkhorn >= 21 iterations", claim, None, "no Sinkhorn trial with 21 or more iterations")]
    out = []
    for (backend, device, dtype), g in rows.groupby(["backend", "device_name", "p_dtype"]):
        worst = g.loc[g["value"].idxmax()]
        out.append(Check(f"sinkhorn >= 21 iterations, {backend} {dtype} ({device})", claim, bool(g["value"].max() <= 1e-3),
                         f"largest |column sum - 1| {g['value'].max():.2e} over {g['trial_key'].nunique()} trials "
                         f"(at {int(worst['p_sinkhorn_iters'])} iterations, epoch {int(worst['step'])})"))
    return out


def _rising_checks(table: pd.DataFrame) -> list[Check]:
    claim = ("softmax attention drifts towards doubly stochastic: the share of columns summing to 1 +/- 0.1 "
             "is larger after the last epoch than after the first (Fig. 5.2)")
    steps = summarize(table, metrics, by_step=True)
    rows = steps[(steps["metric"] == "colsum_frac_within_0.1") & (steps["tag"] == "all")
                 & (steps["p_normalization"] == "softmax")]
    if rows.empty:
        return [Check("softmax column sums", claim, None, "no softmax trial")]
    extra = _varying(rows, ("p_normalization", "p_sinkhorn_iters", "p_sinkhorn_grad"))
    out = []
    for (backend, device, _), g in rows.groupby(["backend", "device_name", "params"], sort=False):
        first = g.iloc[0]
        label = f"softmax {first['p_model']} {backend}" + "".join(f" {c[2:]}={first[c]}" for c in extra if c != "p_model")
        by_step = g.set_index("step")["median"].sort_index()
        trained = by_step[by_step.index >= 1]
        if len(trained) < 2:
            out.append(Check(label, claim, None, "needs at least two epochs"))
            continue
        lo, hi = trained.iloc[0], trained.iloc[-1]
        start = f"; at initialisation {by_step.loc[0]:.3f}" if 0 in by_step.index else ""
        out.append(Check(label, claim, bool(hi > lo),
                         f"epoch {int(trained.index[0])}: {lo:.3f} -> epoch {int(trained.index[-1])}: {hi:.3f} "
                         f"({hi - lo:+.3f}){start}"))
    return out


def _paired(final: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Softmax and Sinkhorn medians of ``metric`` side by side for otherwise equal parameters."""
    rows = final[final["metric"] == metric].copy()
    if rows.empty:
        return rows
    rows["key"] = rows["params"].map(lambda p: _config_key(p, ("normalization", *_SINKHORN_ONLY)))
    soft = rows[rows["p_normalization"] == "softmax"][["backend", "device_name", "key", "median"]]
    sink = rows[rows["p_normalization"] == "sinkhorn"]
    return sink.merge(soft, on=["backend", "device_name", "key"], suffixes=("", "_softmax"))


def _patch_check(table: pd.DataFrame) -> list[Check]:
    claim = ("attention-only model (Fig. 5.6): with more than one patch per image the Sinkformer's final test "
             "accuracy is at least the Transformer's, at every patch size")
    final = summarize(table, metrics)
    pairs = _paired(final[final["p_model"] == "attention_only"], "test_accuracy")
    if not pairs.empty:
        sides = pairs["p_dataset"].map(lambda d: DATASETS[d][0])
        pairs = pairs[pairs["p_patch"] < sides]
    if pairs.empty:
        return [Check("Fig. 5.6 patch sizes", claim, None, "no attention-only softmax/Sinkhorn pair below the image side")]
    out = []
    for (backend, device), g in pairs.groupby(["backend", "device_name"]):
        g = g.sort_values(["p_patch", "p_sinkhorn_iters"])
        text = "; ".join(f"patch {int(r.p_patch)}: sinkhorn {int(r.p_sinkhorn_iters)} {r.median:.3f} vs softmax "
                         f"{r.median_softmax:.3f}" for r in g.itertuples())
        out.append(Check(f"Fig. 5.6 patch sizes, {backend} ({device})", claim,
                         bool((g["median"] >= g["median_softmax"]).all()), text))
    return out


def _overhead_check(table: pd.DataFrame) -> list[Check]:
    claim = ("a Sinkformer with 3 iterations trains at nearly the Transformer's speed: epoch time at most "
             "1.1 times the softmax model's (thesis: 3m25s vs 3m20s on a V100)")
    final = summarize(table, metrics)
    pairs = _paired(final, "epoch_time_s")
    pairs = pairs[pairs["p_sinkhorn_iters"] == 3] if not pairs.empty else pairs
    if pairs.empty:
        return [Check("Sinkhorn 3 overhead", claim, None, "no softmax/Sinkhorn-3 pair with equal other parameters")]
    out = []
    for (backend, device), g in pairs.groupby(["backend", "device_name"]):
        ratio = g["median"] / g["median_softmax"]
        out.append(Check(f"Sinkhorn 3 overhead, {backend} ({device})", claim, bool(ratio.max() <= 1.1),
                         f"epoch time ratio sinkhorn-3 / softmax: median {ratio.median():.2f}, max {ratio.max():.2f} "
                         f"over {len(g)} configurations"))
    return out


smoke = Params(model="vit", normalization="sinkhorn", sinkhorn_iters=3, patch=4, depth=1, heads=2, width=16,
               mlp_dim=32, epochs=2, lr=3e-3, batch=32, eval_batch=32)
