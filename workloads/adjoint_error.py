"""adjoint_error: how well a ResNet's backward is recovered without storing activations, vs depth.

Reversing the Euler step, x_n ~ x_{n+1} - h f(x_{n+1}, theta_n), recovers the activations with an
error in O(1/N) (Prop. 2.9) and the gradient with a relative error in O(1/N) (Prop. 2.10); Heun's
reversal does better when the weights are smooth in depth (Prop. 2.11, 2.12). For Momentum
ResNets, reversal by float division by gamma amplifies rounding as depth grows, while the
information buffer (``momentum_reversible``) reverses exactly (section 4.3.1). With ``train: true``
a trial trains the small classifier of section 2.5.2 on scikit-learn's digits by backprop or by
the adjoint backward instead, and records its final test accuracy (Fig. 2.4).

References: thesis section 2.4, Prop. 2.9-2.12, Fig. 2.3c; section 2.5.2, Fig. 2.4, appendix
2.B.1; eq. 2.1, 2.6-2.9, 4.2-4.3.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import pydantic

from backends import Backend
from backends.datasets import load_images
from backends.init import normal
from backends.residual_classifier_init import ClassifierConfig, cosine_lr
from backends.residual_config import init_params, make_config
from harness.workload import Check, Context, Float, Metric, Params as _Params, Record, Skip
from results.aggregate import summarize

name = "adjoint_error"
version = 2
backends = ("torch", "jax")
metrics = (
    Metric("recon_err", "1", "lower", "median",
           "max over layers n of ||x_n - x~_n|| / ||x_n||, x~ recovered from the output by the model's reversal"),
    Metric("grad_rel_err", "1", "lower", "median",
           "||g_adj - g_bp|| / ||g_bp|| per parameter tensor (tag; 'input' for x_0), g_bp by backprop"),
    Metric("grad_mse_ratio", "1", "lower", "median",
           "mean((g_bp - g_adj)^2) / mean(g_bp^2) per parameter tensor (tag): the measure of Fig. 2.3c"),
    Metric("test_acc", "1", "higher", "last", "train: true only; test accuracy on digits after the last epoch (Fig. 2.4)"),
    Metric("train_loss", "1", "lower", "last", "train: true only; mean training cross-entropy of each epoch (step)"),
)

MODELS = {"euler": "adjoint_euler", "heun": "adjoint_heun", "momentum": "momentum",
          "momentum_reversible": "momentum_reversible"}
"""scheme -> residual model: euler and heun reverse their step (section 2.4); momentum reverses by
float division by gamma (no buffer), momentum_reversible with the information buffer (exact)."""
_ADJOINT = ("euler", "heun")
_EPS = {"float32": float(np.finfo(np.float32).eps), "float64": float(np.finfo(np.float64).eps)}
_COARSE = 4
"""Layers of the coarse net whose weights are interpolated in depth for ``init='smooth'``."""


_TRAIN_ONLY = {"backward": None, "epochs": None, "lr": None}
_ERRORS_ONLY = ("init", "hidden", "image_size", "scale", "gamma", "block")
_TRAIN_DEFAULTS = {"backward": "adjoint", "epochs": 20, "lr": 0.5, "batch": 64, "activation": "relu",
                   "dtype": "float32"}
"""A training trial's defaults: SGD with momentum 0.9, weight decay 5e-4 and a cosine schedule as
appendix 2.B.1, at the batch and learning rate that train this small net on digits in 20 epochs."""


class Params(_Params):
    """One network: reversal scheme, depth, width, batch, initialisation, block, numerics; or a training run."""

    scheme: Literal[tuple(MODELS)] = pydantic.Field(  # type: ignore[valid-type]
        "euler", description="euler | heun (the adjoint's reversal, section 2.4); momentum (float division by "
                             "gamma) | momentum_reversible (information buffer); train: euler | heun only")
    depth: pydantic.PositiveInt = pydantic.Field(64, le=65536, description="N: number of residual layers")
    width: pydantic.PositiveInt = pydantic.Field(16, description="d: features, or channels of a conv block")
    hidden: pydantic.PositiveInt | None = pydantic.Field(None, description="hidden width of f; None: width")
    batch: pydantic.PositiveInt = 8
    init: Literal["tied", "smooth", "iid", "zero"] | None = pydantic.Field(
        "tied", description="tied: one set for every layer; smooth: linearly interpolated in depth from a "
                            f"{_COARSE}-layer net (2.5.2); iid: independent per layer; zero: last layer of f "
                            "zero, so f = 0 and the reversal is exact")
    activation: Literal["tanh", "relu", "gelu"] = "tanh"
    block: Literal["mlp", "conv", "conv_norm"] | None = pydantic.Field(
        "mlp", description="mlp; conv: pre-activation basic block; conv_norm: the same ending in a zero-initialised norm")
    image_size: pydantic.PositiveInt | None = pydantic.Field(None, description="side of the images (conv: 8)")
    scale: Float | None = pydantic.Field(None, gt=0.0, description="step h; None: 1/depth (adjoint), 1 (momentum)")
    gamma: Float | None = pydantic.Field(None, gt=0.0, le=1.0,
                                         description="momentum term (momentum models); None: 1 - 1/(50 depth)")
    dtype: Literal["float32", "float64"] = "float64"
    train: bool = pydantic.Field(False, description="train the section 2.5.2 classifier on digits (Fig. 2.4) "
                                                    "instead of measuring reconstruction and gradient errors")
    backward: Literal["adjoint", "backprop"] | None = pydantic.Field(
        None, description="train only: gradient of the residual part by the adjoint or by backprop")
    epochs: pydantic.PositiveInt | None = pydantic.Field(None, description="train only (default 20)")
    lr: Float | None = pydantic.Field(None, gt=0.0, description="train only: initial learning rate, cosine-annealed "
                                                                 "(default 0.5)")

    @pydantic.model_validator(mode="before")
    @classmethod
    def _null_inapplicable(cls, data: dict) -> dict:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if data.get("train", False) in (True, "true", "True"):
            for key in _ERRORS_ONLY:
                data[key] = None
            for key, value in _TRAIN_DEFAULTS.items():
                if data.get(key) is None:
                    data[key] = value
            return data
        data.update(_TRAIN_ONLY)
        for key in ("init", "block"):  # null (e.g. from a stored row) means the default here
            if data.get(key, "") is None:
                del data[key]
        if data.get("scheme", "euler") in _ADJOINT:
            data["gamma"] = None
        if data.get("block", "mlp") == "mlp":
            data["image_size"] = None
        else:
            data.setdefault("image_size", 8)
        return data

    @pydantic.model_validator(mode="after")
    def _train_schemes(self) -> "Params":
        if self.train and self.scheme not in _ADJOINT:
            raise ValueError(f"scheme={self.scheme!r} with train: true; allowed: {', '.join(_ADJOINT)}")
        return self


def smooth_weights(sets: int, *, width: int, hidden: int | None, block: str, activation: str,
                   dtype: str, seed: int, coarse: int = _COARSE) -> dict[str, np.ndarray]:
    """Weights linearly interpolated in depth from a ``coarse``-layer net (thesis section 2.5.2).

    Args:
        sets: parameter sets wanted (N, or N + 1 for Heun).
        width, hidden, block, activation, dtype, seed: as ``residual_net``.
        coarse: layers of the net drawn i.i.d. and interpolated.

    Returns:
        name -> array (sets, *shape) of ``dtype``, Lipschitz in the layer index with constant O(1/N).
    """
    cfg = make_config("resnet", depth=coarse, width=width, hidden=hidden, block=block,
                      activation=activation, dtype=dtype)
    drawn = init_params(cfg, seed)
    t = np.linspace(0.0, coarse - 1.0, sets)
    lo = np.minimum(np.floor(t).astype(int), coarse - 2)
    frac = t - lo
    out = {}
    for key, value in drawn.items():
        f = frac.reshape((sets,) + (1,) * (value.ndim - 1))
        out[key] = ((1.0 - f) * value[lo] + f * value[lo + 1]).astype(dtype)
    return out


def _net_kwargs(params: Params, seed: int, device) -> dict:
    kwargs = dict(depth=params.depth, width=params.width, hidden=params.hidden, block=params.block,
                  activation=params.activation, tied=params.init == "tied", gamma=params.gamma,
                  scale=params.scale, seed=seed, dtype=params.dtype, device=device)
    if params.block != "mlp":
        kwargs["image_size"] = params.image_size
    sets = params.depth + 1 if params.scheme == "heun" else params.depth
    if params.init == "smooth":
        kwargs["weights"] = smooth_weights(sets, width=params.width, hidden=params.hidden,
                                           block=params.block, activation=params.activation,
                                           dtype=params.dtype, seed=seed)
    elif params.init == "zero":
        hidden = params.hidden or params.width
        last = ({"w2": (params.width, hidden), "b2": (params.width,)} if params.block == "mlp"
                else {"conv2.weight": (params.width, hidden, 3, 3)})
        kwargs["weights"] = {k: np.zeros((sets, *shape)) for k, shape in last.items()}
    return kwargs


def run(params: Params, backend: Backend, ctx: Context) -> list[Record]:
    """Errors of the model's reversal (or, with ``train``, a training run on digits)."""
    return (_train if params.train else _errors)(params, backend, ctx)


def _train(params: Params, backend: Backend, ctx: Context) -> list[Record]:
    """Train the section 2.5.2 classifier with the adjoint or backprop; final test accuracy and loss per epoch."""
    data = load_images("digits")
    config = ClassifierConfig(scheme=params.scheme, backward=params.backward, depth=params.depth, width=params.width,
                              activation=params.activation, in_channels=data.channels, image_size=data.image_size,
                              classes=data.num_classes, dtype=params.dtype, unroll=ctx.device == "cpu")
    device, ops = backend.device(ctx.device), backend.ops
    x = backend.asarray(data.train_x, device, params.dtype)
    y = backend.asarray(data.train_y, device)
    trainer = ops.residual_classifier_trainer(config, ops.residual_classifier_init(config, ctx.seed, device))
    trainer.compile(x, y, params.batch)
    rng = np.random.default_rng(np.random.SeedSequence([ctx.seed, 11]))
    records = []
    for epoch in range(params.epochs):
        loss, _ = trainer.fit_epoch(x, y, rng.permutation(len(data.train_y)), params.batch,
                                    cosine_lr(params.lr, epoch, params.epochs))
        if not np.isfinite(loss):
            raise FloatingPointError(f"training loss is {loss} at epoch {epoch + 1} (lr={params.lr})")
        records.append(Record("train_loss", loss, step=epoch + 1))
    accuracy = float(np.mean(trainer.predict(backend.asarray(data.test_x, device, params.dtype)) == data.test_y))
    return records + [Record("test_acc", accuracy)]


def _errors(params: Params, backend: Backend, ctx: Context) -> list[Record]:
    """Reconstruct every activation from the output; for adjoint models compare gradients with backprop."""
    device = backend.device(ctx.device)
    kwargs = _net_kwargs(params, ctx.seed, device)
    model = MODELS[params.scheme]
    try:
        net = backend.ops.residual_net(model, **kwargs)
    except ValueError as exc:
        raise Skip(str(exc)) from exc
    shape = ((params.batch, params.width) if params.block == "mlp"
             else (params.batch, params.width, params.image_size, params.image_size))
    x = backend.asarray(normal(ctx.seed + 1, shape), device, params.dtype)
    seen = backend.to_numpy(backend.ops.residual_trajectory(net, x)).astype(np.float64)
    back = backend.to_numpy(backend.ops.residual_reconstruct(net, x)).astype(np.float64)
    axes = tuple(range(1, seen.ndim))
    rel = np.sqrt(((seen - back) ** 2).sum(axis=axes)) / np.sqrt((seen ** 2).sum(axis=axes))
    records = [Record("recon_err", float(np.max(rel)))]
    if params.scheme in _ADJOINT:
        g = backend.asarray(normal(ctx.seed + 2, shape), device, params.dtype)
        ref = backend.ops.residual_net(model, backprop=True, **kwargs)
        mine, theirs = backend.ops.residual_vjp(net, x, g), backend.ops.residual_vjp(ref, x, g)
        for key in theirs:
            a = backend.to_numpy(mine[key]).astype(np.float64)
            b = backend.to_numpy(theirs[key]).astype(np.float64)
            nb = float(np.linalg.norm(b))
            err = float(np.linalg.norm(a - b))
            records.append(Record("grad_rel_err", err / nb if nb else err, tag=key))
            msb = float(np.mean(b ** 2))
            mse = float(np.mean((a - b) ** 2))
            records.append(Record("grad_mse_ratio", mse / msb if msb else mse, tag=key))
    return records


_GROUP = ["backend", "device_name", "p_scheme", "p_init", "p_activation", "p_block", "p_width", "p_hidden", "p_batch",
          "p_image_size", "p_scale", "p_dtype", "p_gamma"]
"""One curve vs depth per value of these columns (null parameters read as "-")."""


def _curves(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Median per configuration; several tensors (tags) reduced to their max: one value per depth."""
    summary = summarize(table, metrics)
    rows = summary[summary["metric"] == metric]
    if rows.empty:
        return rows
    keys = [c for c in _GROUP if c in rows.columns] + ["p_depth"]
    rows = rows.assign(**{c: rows[c].astype(object).where(rows[c].notna(), "-") for c in keys if c in rows})
    return rows.groupby(keys, dropna=False, sort=False)["median"].max().reset_index().sort_values("p_depth")


def fitted_slope(depths: np.ndarray, errors: np.ndarray, floor: float) -> tuple[float | None, int]:
    """Least-squares slope of log(error) vs log(depth) over the points above ``floor``.

    Returns:
        (slope or None when fewer than two points are above the floor, points used).
    """
    keep = np.asarray(errors) > floor
    if keep.sum() < 2:
        return None, int(keep.sum())
    return float(np.polyfit(np.log(np.asarray(depths)[keep]), np.log(np.asarray(errors)[keep]), 1)[0]), int(keep.sum())


def _fmt(slope: float | None) -> str:
    return "n/a (fewer than two depths above 100 eps)" if slope is None else f"{slope:.3f}"


_BOUND = {"euler": (1, "Prop. 2.9/2.10: O(1/N)"), "heun": (2, "Prop. 2.11/2.12: O(1/N^2)")}


def _label(key: tuple, cols: list[str]) -> str:
    d = dict(zip(cols, key))
    gamma = f" gamma={d['p_gamma']}" if d.get("p_gamma") not in (None, "-") else ""
    return f"{d['backend']} {d['p_scheme']} {d['p_init']} {d['p_activation']} {d['p_block']} {d['p_dtype']}{gamma}"


def figures(table: pd.DataFrame) -> list:
    """Errors vs depth on log-log axes with fitted slopes; the theory's rates as dashed bounds (Fig. 2.3c)."""
    import plotly.graph_objects as go

    figs = []
    for metric, title in (("recon_err", "Reconstruction error vs depth (max over layers)"),
                          ("grad_rel_err", "Gradient relative error vs depth (max over tensors)"),
                          ("grad_mse_ratio", "Gradient MSE ratio vs depth (max over tensors, Fig. 2.3c)")):
        curves = _curves(table, metric)
        if curves.empty:
            continue
        cols = [c for c in _GROUP if c in curves.columns]
        fig = go.Figure()
        for key, g in curves.groupby(cols, sort=False):
            d = dict(zip(cols, key))
            floor = (100 * _EPS.get(d["p_dtype"], 0.0)) ** (2 if metric == "grad_mse_ratio" else 1)  # a squared ratio
            slope, used = fitted_slope(g["p_depth"].to_numpy(float), g["median"].to_numpy(float), floor)
            fit = "n/a" if slope is None else f"{slope:.2f}"
            y = g["median"].to_numpy(float)
            fig.add_trace(go.Scatter(x=g["p_depth"], y=np.where(y > 0, y, np.nan), mode="lines+markers",
                                     name=f"{_label(key, cols)} (slope {fit})"))
            if d["p_scheme"] in _BOUND and metric != "grad_mse_ratio" and (y > 0).any():
                power, text = _BOUND[d["p_scheme"]]
                n0 = float(g["p_depth"].iloc[0])
                depths = g["p_depth"].to_numpy(float)
                bound = 2 * y[0] * (n0 / depths) ** power
                fig.add_trace(go.Scatter(x=depths, y=bound, mode="lines", line=dict(dash="dash"),
                                         name=f"bound {text} ({d['backend']} {d['p_scheme']} {d['p_init']})"))
        power = 2 if metric == "grad_mse_ratio" else 1
        fig.add_hline(y=(100 * _EPS["float64"]) ** power, line_dash="dot", annotation_text=f"(100 eps float64)^{power}")
        fig.update_layout(title=title, xaxis_title="depth N", yaxis_title=metric, xaxis_type="log", yaxis_type="log")
        figs.append(fig)
    accuracy = _accuracies(table)
    if not accuracy.empty:
        fig = go.Figure()
        for key, g in accuracy.groupby(_TRAIN_GROUP + ["p_backward"], sort=False):
            d = dict(zip(_TRAIN_GROUP + ["p_backward"], key))
            fig.add_trace(go.Scatter(x=g["p_depth"], y=g["median"], mode="lines+markers",
                                     error_y=dict(type="data", symmetric=False, array=g["q75"] - g["median"],
                                                  arrayminus=g["median"] - g["q25"]),
                                     name=f"{_train_label(d)} {d['p_backward']}"))
        fig.update_layout(title="Final test accuracy on digits vs depth, backprop vs adjoint (Fig. 2.4)",
                          xaxis_title="depth N", yaxis_title="test accuracy", xaxis_type="log")
        figs.append(fig)
    return figs


_TRAIN_GROUP = ["backend", "device_name", "p_scheme", "p_activation", "p_width", "p_batch", "p_epochs", "p_lr", "p_dtype"]
"""One accuracy curve vs depth per value of these columns and of the backward."""
_CLOSE = 0.01
"""Accuracy gap (1 point) within which the adjoint counts as matching backprop."""


def _accuracies(table: pd.DataFrame) -> pd.DataFrame:
    """Median test accuracy (and quartiles over repeats) per training configuration and depth."""
    if "p_train" not in table.columns or not table["p_train"].fillna(False).astype(bool).any():
        return pd.DataFrame()
    rows = summarize(table[table["p_train"].fillna(False).astype(bool)], metrics)
    rows = rows[rows["metric"] == "test_acc"]
    return rows.sort_values("p_depth") if not rows.empty else rows


def _train_label(d: dict) -> str:
    return f"{d['backend']} {d['p_scheme']} {d['p_activation']} {d['p_dtype']}"


def _train_checks(table: pd.DataFrame) -> list[Check]:
    """Fig. 2.4: the adjoint reaches backprop's accuracy at large depth, not at small; Heun's adjoint is no worse."""
    accuracy = _accuracies(table)
    out: list[Check] = []
    if accuracy.empty:
        return out
    wide = accuracy.pivot_table(index=_TRAIN_GROUP + ["p_depth"], columns="p_backward", values="median").reset_index()
    if not {"adjoint", "backprop"} <= set(wide.columns):
        return out
    wide = wide.dropna(subset=["adjoint", "backprop"]).sort_values("p_depth")
    for key, g in wide.groupby(_TRAIN_GROUP, sort=False):
        d = dict(zip(_TRAIN_GROUP, key))
        gap = (g["backprop"] - g["adjoint"]).to_numpy(float)
        depths = g["p_depth"].to_numpy(int)
        detail = ", ".join(f"N={n}: backprop {b:.3f}, adjoint {a:.3f}" for n, b, a in zip(depths, g["backprop"], g["adjoint"]))
        out.append(Check(f"adjoint matches backprop at large depth: {_train_label(d)}",
                         f"at the largest depth the adjoint's test accuracy is within {_CLOSE:.0%} of backprop's (Fig. 2.4)",
                         None if len(gap) < 2 else bool(gap[-1] <= _CLOSE), detail))
        out.append(Check(f"adjoint falls short at small depth: {_train_label(d)}",
                         "the adjoint's accuracy gap to backprop is larger at the smallest depth than at the largest (Fig. 2.4)",
                         None if len(gap) < 2 else bool(gap[0] > max(gap[-1], 0.0)), detail))
    adjoint = wide.pivot_table(index=[c for c in _TRAIN_GROUP if c != "p_scheme"] + ["p_depth"], columns="p_scheme",
                               values="adjoint").reset_index()
    if {"euler", "heun"} <= set(adjoint.columns):
        adjoint = adjoint.dropna(subset=["euler", "heun"]).sort_values("p_depth")
        for key, g in adjoint.groupby([c for c in _TRAIN_GROUP if c != "p_scheme"], sort=False):
            d = dict(zip([c for c in _TRAIN_GROUP if c != "p_scheme"], key), p_scheme="heun vs euler")
            out.append(Check(f"Heun's adjoint no worse than Euler's: {_train_label(d)}",
                             f"trained by the adjoint, the HeunNet is at least as accurate as the ResNet (within {_CLOSE:.0%}) "
                             "at every depth (Prop. 2.10 vs 2.12, Fig. 2.4)",
                             bool((g["heun"] >= g["euler"] - _CLOSE).all()),
                             ", ".join(f"N={int(n)}: heun {h:.3f}, euler {e:.3f}"
                                       for n, h, e in zip(g["p_depth"], g["heun"], g["euler"]))))
    return out


def checks(table: pd.DataFrame) -> list[Check]:
    """Prop. 2.9 and 2.11 (float64): Euler slope about -1 with smooth weights, Heun 0.5 steeper, errors fall; Fig. 2.4."""
    curves = _curves(table, "recon_err")
    out: list[Check] = _train_checks(table)
    if curves.empty:
        return out
    curves = curves[curves["p_dtype"] == "float64"]
    cols = [c for c in _GROUP if c in curves.columns]
    slopes: dict[tuple, float | None] = {}
    for key, g in curves.groupby(cols, sort=False):
        d = dict(zip(cols, key))
        depths, errs = g["p_depth"].to_numpy(float), g["median"].to_numpy(float)
        label = _label(key, cols)
        if d["p_scheme"] in _ADJOINT:
            slope, used = fitted_slope(depths, errs, 100 * _EPS["float64"])
            slopes[key] = slope
            above = errs > 100 * _EPS["float64"]
            pairs = [(i, i + 1) for i in range(len(errs) - 1) if above[i] and above[i + 1]]
            falls = all(errs[j] < errs[i] for i, j in pairs)
            out.append(Check(f"recon_err falls with depth: {label}",
                             "reconstruction error decreases with depth while above 100 machine epsilons (Prop. 2.9, 2.11)",
                             None if not pairs else bool(falls),
                             ", ".join(f"N={int(n)}: {e:.3g}" for n, e in zip(depths, errs))))
            if d["p_scheme"] == "euler" and d["p_init"] in ("tied", "smooth"):
                out.append(Check(f"Euler slope: {label}",
                                 "with smooth weights, Euler's reconstruction error falls like 1/N: slope in [-1.3, -0.7] (Prop. 2.9)",
                                 None if slope is None else bool(-1.3 <= slope <= -0.7),
                                 f"slope {_fmt(slope)} over {used} depths"))
        elif d["p_scheme"] == "momentum_reversible":
            out.append(Check(f"buffer reverses exactly: {label}",
                             "with the information buffer the Momentum ResNet's activations are recovered exactly at every depth (4.3.1)",
                             bool(np.all(errs == 0)), f"max recon_err {errs.max():.3g}"))
        elif d["p_scheme"] == "momentum" and len(errs) > 1:
            out.append(Check(f"division by gamma amplifies rounding: {label}",
                             "without the buffer the reconstruction error grows with depth (float division by gamma)",
                             bool(errs[-1] > errs[0]), f"N={int(depths[0])}: {errs[0]:.3g}; N={int(depths[-1])}: {errs[-1]:.3g}"))
    for key, heun in slopes.items():
        d = dict(zip(cols, key))
        if d["p_scheme"] != "heun" or d["p_init"] not in ("tied", "smooth"):
            continue
        euler = slopes.get(tuple("euler" if c == "p_scheme" else v for c, v in zip(cols, key)))
        passed = None if heun is None or euler is None else bool(heun <= euler - 0.5)
        out.append(Check(f"Heun steeper than Euler: {_label(key, cols)}",
                         "with smooth weights Heun's reversal error falls at least 0.5 faster in log-log than Euler's (Prop. 2.11)",
                         passed, f"Heun slope {_fmt(heun)}, Euler slope {_fmt(euler)}"))
    return out


smoke = Params(scheme="heun", depth=16, width=8, batch=4, init="tied", dtype="float64")
