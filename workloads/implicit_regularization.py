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
from typing import Annotated, Literal

import numpy as np
import pandas as pd
import pydantic

from backends import Backend
from backends.scaled_resnet import function_distance, gaussian_pairs, init_scaled_resnet
from core.aggregate import reduce_trials, summarize
from core.checks import Check, at_least, decide, distinct, paired_interval, seeds, span
from core.figures import Custom, Figure, Setting, per_epoch
from core.workload import Context, Float, Metric, OnlyIf, Record, Skip
from core.workload import Params as _Params

name = "implicit_regularization"
version = 1
backends = ("torch", "jax")
metrics = (
    Metric("loss", "1", "lower", "last", "(1/n) sum_i ||F(x_i) - y_i||^2 at the step"),
    Metric(
        "max_layer_diff",
        "1",
        "lower",
        "max",
        "max over layers k and steps t' <= step of ||Z_{k+1} - Z_k||_F = ||dV||_F + ||dW||_F (Fig. 3.1 left)",
    ),
    Metric(
        "dist_to_limit",
        "1",
        "lower",
        "last",
        "(int_0^1 ||Z^L(s) - Z^ref(s)||_F^2 ds)^(1/2) to the net of depth ref_depth trained alongside (Fig. 3.1 right)",
    ),
    Metric(
        "weight_entry",
        "1",
        "lower",
        "last",
        "a fixed random entry of V_k or W_k (tag layer<k>/V[i,j]) at the step (Fig. 3.2 left; no better direction)",
    ),
)


class Params(_Params):
    """Network (eq. 3.3), initialisation, data and gradient descent of one run (appendix 3.E)."""

    depth: pydantic.PositiveInt = pydantic.Field(64, le=1 << 16, description="L, number of residual layers")
    init: Literal["tied", "iid"] = pydantic.Field(
        "tied", description="tied: one Gaussian W for every layer (smooth); iid: one draw per layer"
    )
    activation: Literal["gelu", "relu", "identity"] = "gelu"
    steps: pydantic.NonNegativeInt = pydantic.Field(500, le=10_000_000, description="gradient steps T")
    n: pydantic.PositiveInt = pydantic.Field(100, description="training pairs")
    width: pydantic.PositiveInt = pydantic.Field(16, description="q = d = d', hidden state dimension")
    hidden: pydantic.PositiveInt = pydantic.Field(32, description="m, width of each residual MLP")
    lr: Float = pydantic.Field(
        1e-2, gt=0, le=10, description="step size divided by the depth: GD uses L x lr (eq. 3.4)"
    )
    ref_depth: Annotated[pydantic.PositiveInt | None, OnlyIf(init=["tied"])] = pydantic.Field(
        None,
        le=1 << 18,
        description="depth of the reference net for dist_to_limit (a multiple of depth); None: not measured; "
        "tied only (i.i.d. weights have no limit function to approach)",
    )
    log_every: pydantic.PositiveInt = pydantic.Field(
        10, description="record loss and max_layer_diff every this many steps"
    )
    snapshot_every: pydantic.PositiveInt | None = pydantic.Field(
        100, description="record dist_to_limit and weight entries every this many steps (None: start and end only)"
    )
    profile_entries: pydantic.NonNegativeInt = pydantic.Field(
        1, le=16, description="random entries of V and of W recorded across layers at each snapshot"
    )
    dtype: Literal["float32", "float64"] = "float32"


def _snapshot_steps(params: Params) -> list[int]:
    every = params.snapshot_every or max(params.steps, 1)
    return sorted(set(range(0, params.steps + 1, every)) | {0, params.steps})


def _profile(v: np.ndarray, w: np.ndarray, entries: list[tuple[str, int, int]], step: int) -> list[Record]:
    out = []
    for which, i, j in entries:
        column = (v if which == "V" else w)[:, i, j]
        out += [
            Record("weight_entry", float(value), step=step, tag=f"layer{k + 1}/{which}[{i},{j}]")
            for k, value in enumerate(column)
        ]
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
    entries = [
        (which, int(rng.integers(rows)), int(rng.integers(cols)))
        for _ in range(params.profile_entries)
        for which, rows, cols in (("V", params.width, params.hidden), ("W", params.hidden, params.width))
    ]

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
                records += [
                    Record("loss", float(losses[i]), step=step),
                    Record("max_layer_diff", running_max, step=step),
                ]
        snapshot(t1)
        ctx.logger.debug("step %d: loss %.4g, max layer diff %.3g", t1, float(losses[-1]), running_max)
    if params.steps == 0:
        _, losses, diffs = ops.scaled_resnet_gd(net, x, y, 0.0, 0, params.activation)
        records += [
            Record("loss", float(backend.to_numpy(losses)[0]), step=0),
            Record("max_layer_diff", float(backend.to_numpy(diffs)[0]), step=0),
        ]
    return records


# ----------------------------------------------------------------------------------------- report

_SETUP = ["p_steps", "p_n", "p_width", "p_hidden", "p_lr", "p_dtype"]
"""Parameters that must match for trials to sit on one curve over depth."""
_THESIS_STEPS = 500
"""T of Fig. 3.1 (appendix 3.E): the claims on depth are made at this training time."""
_LONG_STEPS = 80_000
"""Training steps of Fig. 3.2 (the long-time limit)."""
_TIMES = (100, 200, 300, 400, 500)
"""Training times drawn in the Fig. 3.1 panels over time (the thesis' T = 500)."""


def _draw_entries(table: pd.DataFrame):
    """Fig. 3.2 (left): recorded weight entries against the layer's position k / L, one line per training time."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    steps = summarize(table, metrics, by_step=True)
    rows = steps[(steps["metric"] == "weight_entry") & (steps["p_init"] == "tied")]
    if rows.empty:
        return None
    rows = rows[(rows["backend"] == rows["backend"].min()) & (rows["p_steps"] == rows["p_steps"].max())]
    rows = rows[rows["p_depth"] == rows["p_depth"].max()]
    rows = rows[rows["params"] == rows["params"].iloc[0]]
    split = rows["tag"].str.extract(r"layer(?P<layer>\d+)/(?P<entry>.+)")
    rows = rows.assign(s=split["layer"].astype(int) / rows["p_depth"], entry=split["entry"])
    names = sorted(rows["entry"].unique())[:2]
    times = sorted(rows["step"].unique())
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=names)
    for col, entry in enumerate(names, start=1):
        for i, t in enumerate(times):
            h = rows[(rows["entry"] == entry) & (rows["step"] == t)].sort_values("s")
            shade = int(30 + 190 * i / max(len(times) - 1, 1))
            fig.add_trace(
                go.Scatter(
                    x=h["s"],
                    y=h["median"],
                    mode="lines",
                    name=f"{entry} t={int(t)}",
                    line=dict(color=f"rgb({shade}, {shade // 2}, {255 - shade})"),
                ),
                row=1,
                col=col,
            )
    fig.update_layout(
        title=f"weight entries across layers, {rows['p_activation'].iloc[0]}, "
        f"L={int(rows['p_depth'].iloc[0])}, {rows['backend'].iloc[0]} (lighter: later)",
        xaxis_title="layer k / L",
    )
    return fig


_DEPTH = dict(x="p_depth", log_x=True, log_y=True, x_title="depth L")
figures = (
    Figure(
        "max over layers and training steps of ||Z_{k+1} - Z_k||_F vs depth (1/L: slope -1)",
        metric="max_layer_diff",
        series=("p_init", "p_activation"),
        thesis="Fig. 3.1",
        **_DEPTH,
    ),
    Figure(
        "max layer distance vs depth up to training time t (weight-tied init)",
        metric="max_layer_diff",
        by_step=True,
        series=("step",),
        facet="p_activation",
        where={"p_init": "tied", "step": _TIMES},
        thesis="Fig. 3.1",
        **_DEPTH,
    ),
    Figure(
        "distance of the weights to a deeper net's (the large-depth limit) vs depth, at training time t",
        metric="dist_to_limit",
        by_step=True,
        series=("step",),
        where={"p_init": "tied", "step": _TIMES},
        thesis="Fig. 3.1",
        **_DEPTH,
    ),
    Custom("a random entry of V_k and W_k across layers at several training times", _draw_entries, thesis="Fig. 3.2"),
    per_epoch(
        "training loss vs gradient step, long-time run (80,000 steps)",
        metric="loss",
        series=("p_init", "p_activation", "p_depth"),
        where={"p_steps": _LONG_STEPS},
        log_y=True,
        x_title="gradient step",
        thesis="Fig. 3.2",
    ),
    per_epoch(
        "training loss vs gradient step",
        metric="loss",
        series=("p_init", "p_activation"),
        facet="p_depth",
        where={"p_steps": _THESIS_STEPS},
        log_y=True,
        x_title="gradient step",
    ),
)

_OURS = {
    "width q = d = d'": "p_width",
    "MLP width m": "p_hidden",
    "activation": "p_activation",
    "init": "p_init",
    "training pairs n": "p_n",
    "step size / L": "p_lr",
    "gradient steps": "p_steps",
    "depths L": "p_depth",
    "limit depth": "p_ref_depth",
    "seeds": "seed",
    "backend": "backend",
    "device": "device_name",
}
settings = (
    Setting(
        "Fig. 3.1",
        thesis={
            "width q = d = d'": "16",
            "MLP width m": "32",
            "activation": "GELU",
            "init": "V = 0, W weight-tied standard Gaussian",
            "training pairs n": "100",
            "step size / L": "1e-2 (full-batch GD, step L x 1e-2)",
            "gradient steps": "500",
            "depths L": "not stated (log axis)",
            "limit depth": "2^14",
            "seeds": "1 (not stated)",
            "backend": "PyTorch",
            "device": "not stated",
        },
        ours=_OURS,
        where={"p_init": "tied", "p_activation": "gelu", "p_steps": _THESIS_STEPS},
    ),
    Setting(
        "Fig. 3.2",
        thesis={
            "width q = d = d'": "16",
            "MLP width m": "64",
            "activation": "GELU",
            "init": "V = 0, W weight-tied standard Gaussian",
            "training pairs n": "50",
            "step size / L": "5e-3",
            "gradient steps": "80,000",
            "depths L": "64",
            "seeds": "1",
            "backend": "PyTorch",
        },
        ours=_OURS,
        where={"p_steps": _LONG_STEPS},
    ),
    Setting(
        "Table 3.1",
        thesis={
            "model": "convolutional ResNet (batch norm) on CIFAR-10, L = 256",
            "activation": "identity, GELU, ReLU",
            "init": "weight-tied or i.i.d. Gaussian",
            "gradient steps": "180 epochs of SGD, lr 4e-2, cosine",
            "seeds": "5",
            "smoothness": "by visual inspection",
        },
        ours=_OURS,
    ),
)


def _slopes(rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per seed (and configuration): the log-log slope of ``metric`` over depth, and its range of depths."""
    reduced = reduce_trials(rows, metrics)
    reduced = reduced[(reduced["metric"] == metric) & (reduced["value"] > 0)]
    out = []
    for (backend, device, act, init, repeat, *_), g in reduced.groupby(
        ["backend", "device_name", "p_activation", "p_init", "repeat", *_SETUP], dropna=False
    ):
        if g["p_depth"].nunique() < 2:
            continue
        g = g.sort_values("p_depth")
        slope = float(np.polyfit(np.log(g["p_depth"].astype(float)), np.log(g["value"]), 1)[0])
        out.append(
            dict(
                backend=backend,
                device_name=device,
                p_activation=act,
                p_init=init,
                repeat=repeat,
                slope=slope,
                low=int(g["p_depth"].iloc[0]),
                high=int(g["p_depth"].iloc[-1]),
                first=float(g["value"].iloc[0]),
                last=float(g["value"].iloc[-1]),
            )
        )
    return pd.DataFrame(out)


def _slope_test(rows: pd.DataFrame, metric: str, holds) -> tuple[bool | str | None, str]:
    """``holds(interval)`` on the bootstrap interval of the mean slope over seeds; measured: slope and values."""
    slopes = _slopes(rows, metric)
    if slopes.empty:
        return None, "needs two depths or more"
    interval = paired_interval(slopes["slope"], np.zeros(len(slopes)))
    g = slopes.iloc[0]
    return holds(interval), (
        f"log-log slope {interval.text('+.2f')} over L = {g['low']} ... {g['high']} "
        f"(median {metric} {slopes['first'].median():.3g} -> {slopes['last'].median():.3g})"
    )


def _relu_vs_gelu(rows: pd.DataFrame) -> tuple[bool | str | None, str]:
    """Paired over seeds: slope with ReLU minus slope with GELU (both weight-tied); holds when above 0."""
    slopes = _slopes(rows, "max_layer_diff")
    if slopes.empty or set(slopes["p_activation"]) != {"relu", "gelu"}:
        return None, "needs weight-tied ReLU and GELU trials at two depths or more"
    wide = slopes.pivot_table(index="repeat", columns="p_activation", values="slope").dropna()
    if wide.empty:
        return None, "no seed ran both activations"
    interval = paired_interval(wide["relu"], wide["gelu"])
    return interval.side("above"), (
        f"slope ReLU - slope GELU {interval.text('+.2f')}; slopes ReLU "
        f"{wide['relu'].median():+.2f}, GELU {wide['gelu'].median():+.2f} (medians)"
    )


def _reference_deep_enough(rows: pd.DataFrame) -> str | None:
    """Need: the reference net is at least 4 times deeper than the deepest net compared with it."""
    ratio = float(rows["p_ref_depth"].min() / rows["p_depth"].max())
    return None if ratio >= 4 else f"reference depth only {ratio:g}x the largest depth < 4x (thesis: 2^14)"


def _loss_test(rows: pd.DataFrame) -> tuple[bool | str | None, str]:
    steps = reduce_trials(rows, metrics, by_step=True).sort_values("step")
    first = steps.groupby("trial_key")["value"].first().median()
    last = steps.groupby("trial_key")["value"].last().median()
    return bool(last < 0.01 * first), f"loss {first:.3g} -> {last:.3g} after {int(steps['step'].max()):,} steps"


_NEEDS = (
    span("p_depth", 8, "depths"),
    distinct("p_depth", 3, "depths"),
    at_least("p_steps", _THESIS_STEPS, "gradient steps"),
)
_SYNTHETIC = (
    "the thesis' Table 3.1 trains convolutional ResNets on CIFAR-10 and judges smoothness by eye; here the "
    "synthetic model of section 3.5.1, smoothness read from the 1/L rate of the layer distance"
)


def _per_setup(label: str, claim: str, rows: pd.DataFrame, test, **kwargs) -> list[Check]:
    """One check per backend, device and training setup; setups with one depth only where no other has more."""
    if rows.empty:
        return [decide(label, claim, rows, test, **kwargs)]
    groups = list(rows.groupby(["backend", "device_name", *_SETUP], dropna=False))
    groups = [g for g in groups if g[1]["p_depth"].nunique() > 1] or groups
    note = kwargs.pop("note", "")
    return [
        decide(
            f"{label}, {backend} ({device}), {int(g['p_steps'].iloc[0]):,} steps",
            claim,
            g,
            test,
            note=note(g) if callable(note) else note,
            **kwargs,
        )
        for (backend, device, *_), g in groups
    ]


def _limit_note(rows: pd.DataFrame) -> str:
    refs = "/".join(f"{int(r):,}" for r in sorted(rows["p_ref_depth"].dropna().unique()))
    return f"deviation: the large-depth limit is a net of depth {refs} trained alongside (thesis: 2^14 = 16,384)"


def checks(table: pd.DataFrame) -> list[Check]:
    """1/L layer distance with smooth init (Fig. 3.1 left), convergence to the deep limit (Fig. 3.1 right), no
    smoothness with i.i.d. init or ReLU (Table 3.1, on the synthetic model), loss to zero in the long run (Fig. 3.2)."""
    ok = table[(table["status"] == "ok") & table["metric"].notna()] if not table.empty else table

    def select(metric: str, **where) -> pd.DataFrame:
        if ok.empty:
            return ok
        keep = ok["metric"] == metric
        for column, values in where.items():
            keep &= ok[column].isin(values if isinstance(values, tuple) else (values,))
        rows = ok[keep]
        if metric == "max_layer_diff" and rows["p_ref_depth"].isna().any():
            rows = rows[rows["p_ref_depth"].isna()]  # a reference net changes nothing here; seeds are counted without
        return rows

    long = select("loss", p_init="tied", p_activation="gelu")
    long = long[long["p_steps"] == long["p_steps"].max()] if not long.empty else long
    return [
        *_per_setup(
            "1/L layer distance, weight-tied GELU",
            "1/L convergence of the maximum distance between two successive weight matrices "
            "max_{k, t <= T} ||Z_{k+1}^L(t) - Z_k^L(t)||_F, as predicted by Proposition 3.3 (95% CI of the "
            "log-log slope over depth within [-1.25, -0.75])",
            select("max_layer_diff", p_init="tied", p_activation="gelu"),
            lambda r: _slope_test(r, "max_layer_diff", lambda i: i.low >= -1.25 and i.high <= -0.75),
            needs=(*_NEEDS, seeds(3)),
            figure="Fig. 3.1",
        ),
        *_per_setup(
            "convergence to the large-depth limit, weight-tied GELU",
            "uniform convergence of Z^L to its large-depth limit Z (Theorem 3.4 (ii)): the distance to a much "
            "deeper net's weights falls with L (95% CI of the log-log slope below -0.5)",
            select("dist_to_limit", p_init="tied", p_activation="gelu"),
            lambda r: _slope_test(r, "dist_to_limit", lambda i: i.side("below", -0.5)),
            needs=(*_NEEDS, _reference_deep_enough),
            figure="Fig. 3.1",
            note=_limit_note,
        ),
        *_per_setup(
            "no smoothness with i.i.d. init",
            "if an i.i.d. initialization is used, smoothness is not preserved after training, and the residual "
            "network does not discretize a neural ODE: the layer distance does not fall with depth (95% CI of "
            "the log-log slope above -0.3)",
            select("max_layer_diff", p_init="iid"),
            lambda r: _slope_test(r, "max_layer_diff", lambda i: i.side("above", -0.3)),
            needs=(*_NEEDS, seeds(3)),
            figure="Table 3.1",
            note=_SYNTHETIC,
        ),
        *_per_setup(
            "smoothness lost with ReLU, weight-tied",
            "the smoothness of the weights is lost when training with ReLU (appendix 3.D), while GELU with a "
            "weight-tied initialization keeps it: the layer distance falls more slowly than 1/L with ReLU (95% "
            "CI of the paired difference of log-log slopes, ReLU - GELU, same seeds, above 0)",
            select("max_layer_diff", p_init="tied", p_activation=("relu", "gelu")),
            _relu_vs_gelu,
            needs=(*_NEEDS, seeds(3)),
            figure="Table 3.1",
            note=_SYNTHETIC,
        ),
        *_per_setup(
            "long-time loss, weight-tied GELU",
            "trained for long (80,000 steps, L = 64), the loss converges to zero (Theorem 3.7): the last loss "
            "is below 1 % of the first",
            long,
            _loss_test,
            needs=(at_least("p_steps", _LONG_STEPS, "gradient steps"),),
            figure="Fig. 3.2",
        ),
    ]


smoke = Params(depth=8, init="tied", activation="gelu", steps=40, ref_depth=32, log_every=5, snapshot_every=20)
