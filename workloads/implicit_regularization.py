"""implicit_regularization: do trained deep residual networks stay discretisations of a neural ODE?

Trains the scaled residual network of eq. 3.3 (A = B = identity, q = d = d', V = 0 at start, W
weight-tied Gaussian: the smooth initialisation, or i.i.d. per layer) by full-batch gradient
descent with step size L x lr on n Gaussian pairs (x, y), and records the loss, the largest
distance between successive layers' weights max_{k, t' <= t} ||Z_{k+1}(t') - Z_k(t')||_F (falls
like 1/L with the smooth initialisation, Proposition 3.3, Fig. 3.1 left), the distance of the
weights, read as functions of s = k / L, to those of a deeper reference net trained alongside
(Theorem 3.4, Fig. 3.1 right), and fixed random weight entries across layers (Fig. 3.2 left).
Thesis chapter 3, section 3.5.1, appendix 3.E.
"""
from __future__ import annotations

import itertools
from typing import Literal

import numpy as np
import pandas as pd
import pydantic

from backends import Backend
from backends.scaled_resnet_init import function_distance, gaussian_pairs, init_scaled_resnet
from harness.workload import Check, Context, Float, Metric, Params as _Params, Record, Skip
from results.aggregate import summarize

name = "implicit_regularization"
version = 1
backends = ("torch", "jax")
metrics = (
    Metric("loss", "1", "lower", "last", "(1/n) sum_i ||F(x_i) - y_i||^2 at the step"),
    Metric("max_layer_diff", "1", "lower", "max",
           "max over layers k and steps t' <= step of ||Z_{k+1} - Z_k||_F = ||dV||_F + ||dW||_F (Fig. 3.1 left)"),
    Metric("dist_to_limit", "1", "lower", "last",
           "(int_0^1 ||Z^L(s) - Z^ref(s)||_F^2 ds)^(1/2) to the net of depth ref_depth trained alongside (Fig. 3.1 right)"),
    Metric("weight_entry", "1", "lower", "last",
           "a fixed random entry of V_k or W_k (tag layer<k>/V[i,j]) at the step (Fig. 3.2 left; no better direction)"),
)


class Params(_Params):
    """Network (eq. 3.3), initialisation, data and gradient descent of one run (appendix 3.E)."""

    depth: pydantic.PositiveInt = pydantic.Field(64, le=1 << 16, description="L, number of residual layers")
    init: Literal["tied", "iid"] = pydantic.Field(
        "tied", description="tied: one Gaussian W for every layer (smooth); iid: one draw per layer")
    activation: Literal["gelu", "relu", "identity"] = "gelu"
    steps: pydantic.NonNegativeInt = pydantic.Field(500, le=10_000_000, description="gradient steps T")
    n: pydantic.PositiveInt = pydantic.Field(100, description="training pairs")
    width: pydantic.PositiveInt = pydantic.Field(16, description="q = d = d', hidden state dimension")
    hidden: pydantic.PositiveInt = pydantic.Field(32, description="m, width of each residual MLP")
    lr: Float = pydantic.Field(1e-2, gt=0, le=10, description="step size divided by the depth: GD uses L x lr (eq. 3.4)")
    ref_depth: pydantic.PositiveInt | None = pydantic.Field(
        None, le=1 << 18, description="depth of the reference net for dist_to_limit (a multiple of depth); None: not measured")
    log_every: pydantic.PositiveInt = pydantic.Field(10, description="record loss and max_layer_diff every this many steps")
    snapshot_every: pydantic.PositiveInt | None = pydantic.Field(
        100, description="record dist_to_limit and weight entries every this many steps (None: start and end only)")
    profile_entries: pydantic.NonNegativeInt = pydantic.Field(
        1, le=16, description="random entries of V and of W recorded across layers at each snapshot")
    dtype: Literal["float32", "float64"] = "float32"

    @pydantic.model_validator(mode="before")
    @classmethod
    def _null_inapplicable(cls, data: dict) -> dict:
        if isinstance(data, dict) and data.get("init", "tied") == "iid":
            return {**data, "ref_depth": None}  # i.i.d. weights have no limit function to approach
        return data


def _snapshot_steps(params: Params) -> list[int]:
    every = params.snapshot_every or max(params.steps, 1)
    return sorted(set(range(0, params.steps + 1, every)) | {0, params.steps})


def _profile(v: np.ndarray, w: np.ndarray, entries: list[tuple[str, int, int]], step: int) -> list[Record]:
    out = []
    for which, i, j in entries:
        column = (v if which == "V" else w)[:, i, j]
        out += [Record("weight_entry", float(value), step=step, tag=f"layer{k + 1}/{which}[{i},{j}]")
                for k, value in enumerate(column)]
    return out


def run(params: Params, backend: Backend, ctx: Context) -> list[Record]:
    """Train by full-batch GD; record loss, max layer distance, distance to the deeper net, profiles."""
    if params.ref_depth is not None and (params.ref_depth <= params.depth or params.ref_depth % params.depth):
        raise Skip(f"ref_depth={params.ref_depth} must be a multiple of depth={params.depth} and larger")
    device, ops = backend.device(ctx.device), backend.ops
    x_np, y_np = gaussian_pairs(params.n, params.width, ctx.seed, params.dtype)
    x, y = backend.asarray(x_np, device, params.dtype), backend.asarray(y_np, device, params.dtype)

    def start(depth: int) -> dict:
        weights = init_scaled_resnet(depth, params.width, params.hidden, params.init, ctx.seed, params.dtype)
        return {k: backend.asarray(a, device, params.dtype) for k, a in weights.items()}

    net = start(params.depth)
    ref = start(params.ref_depth) if params.ref_depth else None
    rng = np.random.default_rng(np.random.SeedSequence([ctx.seed, 5]))
    entries = [(which, int(rng.integers(rows)), int(rng.integers(cols)))
               for _ in range(params.profile_entries)
               for which, rows, cols in (("V", params.width, params.hidden), ("W", params.hidden, params.width))]

    records: list[Record] = []
    running_max = 0.0
    snaps = _snapshot_steps(params)

    def snapshot(step: int) -> None:
        v, w = backend.to_numpy(net["V"]), backend.to_numpy(net["W"])
        records.extend(_profile(v, w, entries, step))
        if ref is not None:
            dist = function_distance(v, w, backend.to_numpy(ref["V"]), backend.to_numpy(ref["W"]))
            records.append(Record("dist_to_limit", dist, step=step))

    snapshot(0)
    for t0, t1 in itertools.pairwise(snaps):
        net, losses, diffs = ops.scaled_resnet_gd(net, x, y, params.lr * params.depth, t1 - t0, params.activation)
        losses, diffs = backend.to_numpy(losses), backend.to_numpy(diffs)
        if ref is not None:
            ref = ops.scaled_resnet_gd(ref, x, y, params.lr * params.ref_depth, t1 - t0, params.activation)[0]
        if not np.all(np.isfinite(losses)):
            raise FloatingPointError(f"loss is not finite between steps {t0} and {t1} (lr={params.lr} x depth)")
        for i in range(0 if t0 == 0 else 1, t1 - t0 + 1):
            step = t0 + i
            running_max = max(running_max, float(diffs[i]))
            if step % params.log_every == 0 or step == params.steps:
                records += [Record("loss", float(losses[i]), step=step),
                            Record("max_layer_diff", running_max, step=step)]
        snapshot(t1)
        ctx.logger.debug("step %d: loss %.4g, max layer diff %.3g", t1, float(losses[-1]), running_max)
    if params.steps == 0:
        _, losses, diffs = ops.scaled_resnet_gd(net, x, y, 0.0, 0, params.activation)
        records += [Record("loss", float(backend.to_numpy(losses)[0]), step=0),
                    Record("max_layer_diff", float(backend.to_numpy(diffs)[0]), step=0)]
    return records


# ----------------------------------------------------------------------------------------- report

_SETUP = ["p_steps", "p_n", "p_width", "p_hidden", "p_lr", "p_dtype"]
"""Parameters that must match for trials to sit on one curve over depth."""


def _shown_backend(df: pd.DataFrame) -> str:
    return "torch" if "torch" in set(df["backend"]) else min(set(df["backend"]))


def _slope(depth: pd.Series, value: pd.Series) -> float | None:
    ok = (value > 0) & np.isfinite(value)
    if ok.sum() < 2 or depth[ok].nunique() < 2:
        return None
    return float(np.polyfit(np.log(depth[ok].astype(float)), np.log(value[ok].astype(float)), 1)[0])


def _times(steps: pd.Series, count: int = 5) -> list[int]:
    """Up to ``count`` training times spread over the recorded steps, the last included."""
    uniq = sorted(int(s) for s in steps.dropna().unique())
    if len(uniq) <= count:
        return uniq
    return sorted({uniq[int(round(i))] for i in np.linspace(0, len(uniq) - 1, count)})


def figures(table: pd.DataFrame) -> list:
    """Fig. 3.1 left (final and over time), Fig. 3.1 right, Fig. 3.2 left (weights across layers) and right (loss)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    final = summarize(table, metrics)
    steps = summarize(table, metrics, by_step=True)
    if final.empty:
        return []
    figs = []
    diff = final[final["metric"] == "max_layer_diff"]
    if not diff.empty:
        fig = go.Figure()
        for (backend, device, init, act, *_), g in diff.groupby(["backend", "device_name", "p_init", "p_activation", *_SETUP]):
            g = g.sort_values("p_depth")
            fig.add_trace(go.Scatter(x=g["p_depth"], y=g["median"], mode="lines+markers", name=f"{init} {act} {backend} ({device})",
                                     error_y=dict(type="data", symmetric=False, array=g["q75"] - g["median"],
                                                  arrayminus=g["median"] - g["q25"])))
        depths = np.array(sorted(diff["p_depth"].unique()), float)
        smooth = diff[(diff["p_init"] == "tied") & (diff["p_activation"] == "gelu")]
        if not smooth.empty and len(depths) > 1:
            anchor = smooth.sort_values("p_depth").iloc[0]
            fig.add_trace(go.Scatter(x=depths, y=anchor["median"] * anchor["p_depth"] / depths, mode="lines",
                                     line=dict(dash="dot", color="gray"), name="1/L"))
        fig.update_layout(title="Fig. 3.1 (left): max over layers and steps of ||Z_{k+1} - Z_k||_F vs depth (median, IQR)",
                          xaxis_title="depth L", yaxis_title="max layer distance", xaxis_type="log", yaxis_type="log")
        figs.append(fig)

    for metric, title in (("max_layer_diff", "Fig. 3.1 (left): max layer distance vs depth, up to training time t"),
                          ("dist_to_limit", "Fig. 3.1 (right): distance to the deeper net's weights vs depth, at time t")):
        rows = steps[(steps["metric"] == metric) & (steps["p_init"] == "tied")]
        if rows.empty:
            continue
        rows = rows[rows["backend"] == _shown_backend(rows)]
        fig = go.Figure()
        for (act, *_), g in rows.groupby(["p_activation", *_SETUP]):
            for t in _times(g["step"]):
                h = g[g["step"] == t].sort_values("p_depth")
                fig.add_trace(go.Scatter(x=h["p_depth"], y=h["median"], mode="lines+markers", name=f"{act} t={t}"))
        fig.update_layout(title=f"{title} (tied init, {rows['backend'].iloc[0]})", xaxis_title="depth L",
                          yaxis_title=metric, xaxis_type="log", yaxis_type="log")
        figs.append(fig)

    entries = steps[steps["metric"] == "weight_entry"]
    for (init, act), rows in entries.groupby(["p_init", "p_activation"]):
        rows = rows[rows["backend"] == _shown_backend(rows)]
        deepest = rows[rows["p_depth"] == rows["p_depth"].max()]
        deepest = deepest[deepest["params"] == deepest["params"].iloc[0]]
        split = deepest["tag"].str.extract(r"layer(?P<layer>\d+)/(?P<entry>.+)")
        deepest = deepest.assign(layer=split["layer"].astype(int), entry=split["entry"])
        names = sorted(deepest["entry"].unique())[:2]
        fig = make_subplots(rows=1, cols=len(names), subplot_titles=names)
        times = _times(deepest["step"], 6)
        for col, entry in enumerate(names, start=1):
            for i, t in enumerate(times):
                h = deepest[(deepest["entry"] == entry) & (deepest["step"] == t)].sort_values("layer")
                shade = int(30 + 190 * i / max(len(times) - 1, 1))
                fig.add_trace(go.Scatter(x=h["layer"] / h["p_depth"], y=h["median"], mode="lines", name=f"{entry} t={t}",
                                         line=dict(color=f"rgb({shade}, {shade // 2}, {255 - shade})")), row=1, col=col)
        fig.update_layout(title=f"Fig. 3.2 (left): weight entries across layers, {init} {act}, L={int(deepest['p_depth'].iloc[0])} "
                                "(lighter: later)", xaxis_title="layer k / L")
        figs.append(fig)

    loss = steps[steps["metric"] == "loss"]
    if not loss.empty:
        loss = loss[loss["backend"] == _shown_backend(loss)]
        fig = go.Figure()
        for (init, act, depth, *_), g in loss.groupby(["p_init", "p_activation", "p_depth", *_SETUP]):
            g = g.sort_values("step")
            fig.add_trace(go.Scatter(x=g["step"], y=g["median"], mode="lines", name=f"{init} {act} L={depth}"))
        fig.update_layout(title=f"Fig. 3.2 (right): training loss vs step ({loss['backend'].iloc[0]})",
                          xaxis_title="gradient step", yaxis_title="loss", yaxis_type="log")
        figs.append(fig)
    return figs


def checks(table: pd.DataFrame) -> list[Check]:
    """1/L fall of the layer distance (smooth init, GELU), none with i.i.d. init, convergence to the deep net, loss to 0."""
    final = summarize(table, metrics)
    out: list[Check] = []
    diff = final[final["metric"] == "max_layer_diff"]
    claims = {
        "tied": ("with smooth (weight-tied) init and GELU, max_layer_diff falls like 1/L: log-log slope in [-1.3, -0.7] "
                 "(Proposition 3.3, Fig. 3.1)", lambda s: -1.3 <= s <= -0.7),
        "iid": ("with i.i.d. init, max_layer_diff does not fall with depth: log-log slope > -0.3", lambda s: s > -0.3),
    }
    for init, (claim, test) in claims.items():
        rows = diff[diff["p_init"] == init]
        if init == "tied":
            rows = rows[rows["p_activation"] == "gelu"]
        if rows.empty:
            out.append(Check(f"max_layer_diff slope, {init}", claim, None, f"no {init} trials"))
            continue
        for (backend, device, act, *setup), g in rows.groupby(["backend", "device_name", "p_activation", *_SETUP]):
            label = f"{init} {act}, {backend} ({device}), steps={int(setup[0])}"
            slope = _slope(g["p_depth"], g["median"])
            if slope is None:
                out.append(Check(f"max_layer_diff slope, {label}", claim, None, "needs two depths or more"))
                continue
            g = g.sort_values("p_depth")
            out.append(Check(f"max_layer_diff slope, {label}", claim, bool(test(slope)),
                             f"slope {slope:.2f} over L={int(g['p_depth'].iloc[0])}..{int(g['p_depth'].iloc[-1])} "
                             f"({g['median'].iloc[0]:.3g} -> {g['median'].iloc[-1]:.3g})"))

    dist = final[(final["metric"] == "dist_to_limit") & (final["p_activation"] == "gelu")]
    claim = ("with smooth init and GELU the trained weights converge, as functions of depth, to the deeper net's: "
             "dist_to_limit falls with L, log-log slope < -0.5 (Theorem 3.4 (ii), Fig. 3.1 right)")
    for (backend, device, ref, *setup), g in dist.groupby(["backend", "device_name", "p_ref_depth", *_SETUP]):
        slope = _slope(g["p_depth"], g["median"])
        label = f"dist_to_limit slope, ref {int(ref)}, {backend} ({device}), steps={int(setup[0])}"
        out.append(Check(label, claim, None if slope is None else bool(slope < -0.5),
                         "needs two depths or more" if slope is None else f"slope {slope:.2f}"))

    steps = summarize(table, metrics, by_step=True)
    loss = steps[(steps["metric"] == "loss") & (steps["p_steps"] >= 10_000) & (steps["p_init"] == "tied")
                 & (steps["p_activation"] == "gelu")]
    claim = "trained long enough (>= 10,000 steps), the loss tends to zero: last / first < 0.01 (Theorem 3.7, Fig. 3.2 right)"
    if loss.empty:
        out.append(Check("long-time loss", claim, None, "no tied GELU run of 10,000 steps or more"))
    for (backend, device, params), g in loss.groupby(["backend", "device_name", "params"]):
        g = g.sort_values("step")
        first, last = float(g["median"].iloc[0]), float(g["median"].iloc[-1])
        label = f"long-time loss, L={int(g['p_depth'].iloc[0])} n={int(g['p_n'].iloc[0])} m={int(g['p_hidden'].iloc[0])}, {backend}"
        out.append(Check(label, claim, bool(last < 0.01 * first), f"{first:.3g} -> {last:.3g} after {int(g['step'].iloc[-1])} steps"))
    return out


smoke = Params(depth=8, init="tied", activation="gelu", steps=40, ref_depth=32, log_every=5, snapshot_every=20)
