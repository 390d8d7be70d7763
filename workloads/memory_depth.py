"""memory_depth: memory and time of one forward and backward vs depth, for memory-free residual networks.

Backprop keeps every activation, so its memory grows linearly with depth; checkpointing keeps one
per block; a Momentum ResNet with exactly reversible multiplication by gamma (and a RevNet)
recomputes them bit for bit from the output, so its activation memory stays flat (Fig. 4.2,
batch 500, d = 500, gamma = 1 - 1/(50 depth)); the adjoint ResNet and HeunNet recompute them
approximately by reversing the step (section 2.4). Also per model: the gradient's agreement with
backprop through the same forward, and the error of the reconstructed input.
"""
from __future__ import annotations

import math
from typing import Literal

import numpy as np
import pandas as pd
import pydantic

from backends import Backend, timer
from backends.init import normal
from backends.residual_config import MODELS, TORCHVISION
from harness.workload import Check, Context, Float, Metric, Params as _Params, Record, Skip
from results.aggregate import summarize

name = "memory_depth"
version = 1
backends = ("torch", "jax")
metrics = (
    Metric("peak_bytes", "B", "lower", "median",
           "peak memory above the pre-call level during one forward+backward (CUDA allocator; torch CPU: "
           "profiler allocation events; JAX: compiled temp + output bytes)"),
    Metric("activation_bytes", "B", "lower", "median",
           "peak_bytes minus the gradients' bytes (parameters and inputs are already outside the peak)"),
    Metric("saved_bytes", "B", "lower", "median", "bytes the forward keeps for the backward, inputs and parameters excluded"),
    Metric("time_s", "s", "lower", "median", "one forward+backward, one sample per timing repeat"),
    Metric("grad_rel_err", "1", "lower", "max",
           "||g - g_ref|| / ||g_ref|| per parameter tensor (tag), g_ref by backprop through the same forward"),
    Metric("state_recon_err", "1", "lower", "max", "max |x~_0 - x_0| of the input the backward's reversal recovers"),
)

_MOMENTUM = ("momentum", "momentum_reversible")
_RECONSTRUCTING = ("momentum_reversible", "revnet", "adjoint_euler", "adjoint_heun")
_ITEMSIZE = {"float32": 4, "float64": 8}


class Params(_Params):
    """One network and one batch: model, depth, width, batch, gamma, tied weights, block, dtype."""

    model: Literal[MODELS] = "momentum_reversible"  # type: ignore[valid-type]
    depth: pydantic.PositiveInt | None = pydantic.Field(10, description="layers (None for a torchvision block)")
    width: pydantic.PositiveInt | None = pydantic.Field(500, description="d: features, or channels of a conv block")
    hidden: pydantic.PositiveInt | None = pydantic.Field(None, description="hidden width of f; None: width")
    batch: pydantic.PositiveInt = 500
    gamma: Float | None = pydantic.Field(None, ge=0.0, le=1.0,
                                         description="momentum term; None: 1 - 1/(50 depth) (Fig. 4.2), 0.9 torchvision")
    tied: bool | None = pydantic.Field(True, description="one set of weights for every layer")
    block: Literal["mlp", "conv", *TORCHVISION] = "mlp"  # type: ignore[valid-type]
    activation: Literal["tanh", "relu"] | None = "tanh"
    image_size: pydantic.PositiveInt | None = pydantic.Field(None, description="side of the images (conv: 8, torchvision: 32)")
    dtype: Literal["float32", "float64"] = "float32"
    warmup: pydantic.PositiveInt = 1
    timing_repeats: pydantic.PositiveInt = 3
    reference: bool = pydantic.Field(True, description="also measure grad_rel_err and state_recon_err")

    @pydantic.model_validator(mode="before")
    @classmethod
    def _null_inapplicable(cls, data: dict) -> dict:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if data.get("model", "momentum_reversible") not in _MOMENTUM:
            data["gamma"] = None
        block = data.get("block", "mlp")
        if block in TORCHVISION:
            data |= {"depth": None, "width": None, "hidden": None, "tied": None, "activation": None}
            data.setdefault("image_size", 32)
        elif block == "mlp":
            data["image_size"] = None
        else:
            data.setdefault("image_size", 8)
        return data


def _nbytes(arrays, dtype: str) -> int:
    return sum(math.prod(a.shape) for a in arrays) * _ITEMSIZE[dtype]


def _flat(tree) -> list:
    if isinstance(tree, dict):
        return [leaf for v in tree.values() for leaf in _flat(v)]
    if isinstance(tree, (list, tuple)):
        return [leaf for v in tree for leaf in _flat(v)]
    return [tree]


def run(params: Params, backend: Backend, ctx: Context) -> list[Record]:
    """Memory pass, timing pass, then (with ``reference``) gradients against backprop and the reconstruction."""
    device = backend.device(ctx.device)
    kwargs = dict(depth=params.depth, width=params.width, hidden=params.hidden, block=params.block,
                  activation=params.activation or "tanh", tied=bool(params.tied), gamma=params.gamma,
                  image_size=params.image_size, seed=ctx.seed, dtype=params.dtype, device=device)
    try:
        net = backend.ops.residual_net(params.model, **kwargs)
    except NotImplementedError as exc:
        raise Skip(str(exc)) from exc
    if params.block in TORCHVISION:
        shape = (params.batch, 3, params.image_size, params.image_size)
    elif params.block == "conv":
        shape = (params.batch, params.width, params.image_size, params.image_size)
    else:
        shape = (params.batch, params.width)
    x = backend.asarray(normal(ctx.seed + 1, shape), device, params.dtype)
    out_shape = tuple(backend.ops.residual_apply(net, x).shape)
    g = backend.asarray(normal(ctx.seed + 2, out_shape), device, params.dtype)
    forward, step, weights = backend.ops.residual_functional(net)
    records = [Record("saved_bytes", float(backend.memory.saved_bytes(forward, weights, x)))]
    peak = backend.memory.peak_bytes(step, weights, x, g)
    if peak is None:
        peak = backend.ops.host_peak_bytes(step, weights, x, g)
    if peak is not None:
        grad_bytes = _nbytes(_flat(step(weights, x, g)), params.dtype)
        records += [Record("peak_bytes", float(peak)), Record("activation_bytes", float(peak - grad_bytes))]
    samples = timer(backend, lambda: step(weights, x, g), kind=ctx.device, warmup=params.warmup,
                    repeats=params.timing_repeats)
    records += [Record("time_s", t, sample=i) for i, t in enumerate(samples)]
    if params.reference:
        records += _accuracy(params, backend, net, kwargs, x, g)
    return records


def _accuracy(params: Params, backend: Backend, net, kwargs: dict, x, g) -> list[Record]:
    """grad_rel_err against backprop through the same forward; state_recon_err of the reversal."""
    records = []
    if params.model not in ("resnet", "momentum"):
        ref = backend.ops.residual_net(params.model, backprop=True, **kwargs)
        mine, theirs = backend.ops.residual_vjp(net, x, g), backend.ops.residual_vjp(ref, x, g)
        for tag in mine:
            a, b = backend.to_numpy(mine[tag]), backend.to_numpy(theirs[tag])
            denom = float(np.linalg.norm(b))
            records.append(Record("grad_rel_err", float(np.linalg.norm(a - b)) / denom if denom else float(np.linalg.norm(a)),
                                  tag=tag))
    if params.model in _RECONSTRUCTING and params.block not in TORCHVISION:
        every = params.depth
        seen = backend.to_numpy(backend.ops.residual_trajectory(net, x, every))
        back = backend.to_numpy(backend.ops.residual_reconstruct(net, x, every))
        records.append(Record("state_recon_err", float(np.max(np.abs(back[0] - seen[0])))))
    return records


_GROUP = ["backend", "device_name", "p_block", "p_width", "p_hidden", "p_batch", "p_tied", "p_dtype", "p_activation",
          "p_image_size"]


def _memory_metric(summary: pd.DataFrame) -> str:
    return "activation_bytes" if (summary["metric"] == "activation_bytes").any() else "saved_bytes"


def _lines(summary: pd.DataFrame, metric: str, x: str, title: str, ytitle: str, scale: float = 1.0, log: bool = False):
    import plotly.graph_objects as go

    rows = summary[(summary["metric"] == metric) & summary[x].notna()]
    fig = go.Figure()
    keys = [c for c in ["backend", "p_model", "p_tied", "p_block", "p_dtype", "p_batch", "p_width", "p_depth", "device_name"]
            if c != x and c in rows and rows[c].nunique(dropna=False) > 0]
    for key, grp in rows.groupby(keys, dropna=False, sort=True):
        grp = grp.sort_values(x)
        if len(grp) < 2:
            continue
        label = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        varying = [k for k in keys if rows[k].nunique(dropna=False) > 1 or k in ("backend", "p_model")]
        fig.add_trace(go.Scatter(
            x=grp[x], y=grp["median"] / scale, mode="lines+markers",
            name=" ".join(f"{label[k]}" if k in ("backend", "p_model") else f"{k[2:] if k.startswith('p_') else k}={label[k]}"
                          for k in varying),
            error_y=dict(type="data", symmetric=False, array=(grp["q75"] - grp["median"]) / scale,
                         arrayminus=(grp["median"] - grp["q25"]) / scale)))
    if not fig.data:
        return None
    fig.update_layout(title=title, xaxis_title=x.removeprefix("p_"), yaxis_title=ytitle,
                      xaxis_type="log" if log else "linear", yaxis_type="log" if log else "linear")
    return fig


def figures(table: pd.DataFrame) -> list:
    """Fig. 4.2 (memory vs depth per model), Fig. 4.7 upper (memory vs batch), time vs depth."""
    summary = summarize(table, metrics)
    if summary.empty:
        return []
    summary = summary[summary["tag"].isna()]
    mem = _memory_metric(summary)
    figs = [
        _lines(summary, mem, "p_depth", f"Fig. 4.2: {mem} of one forward+backward vs depth", "MiB", 2**20),
        _lines(summary, "saved_bytes", "p_depth", "Bytes saved for the backward vs depth", "MiB", 2**20),
        _lines(summary, mem, "p_batch", f"Fig. 4.7 (upper): {mem} vs batch size", "MiB", 2**20),
        _lines(summary, "time_s", "p_depth", "Time of one forward+backward vs depth", "s", log=True),
    ]
    return [f for f in figs if f is not None]


def _slope(grp: pd.DataFrame) -> float | None:
    grp = grp.dropna(subset=["p_depth"])
    if grp["p_depth"].nunique() < 2:
        return None
    return float(np.polyfit(grp["p_depth"].astype(float), grp["median"].astype(float), 1)[0])


def checks(table: pd.DataFrame) -> list[Check]:
    """Flat memory of the reversible Momentum ResNet (slope < 2% of backprop's), its gradient, its exact reversal."""
    summary = summarize(table, metrics)
    out: list[Check] = []
    for metric in ("activation_bytes", "saved_bytes"):
        claim = f"momentum_reversible's {metric} grows with depth at under 2% of resnet's rate (Fig. 4.2)"
        rows = summary[(summary["metric"] == metric) & summary["p_model"].isin(["resnet", "momentum_reversible"])]
        found = False
        for key, grp in rows.groupby([c for c in _GROUP if c in rows], dropna=False):
            rev, res = _slope(grp[grp["p_model"] == "momentum_reversible"]), _slope(grp[grp["p_model"] == "resnet"])
            if rev is None or res is None:
                continue
            found = True
            label = ", ".join(str(k) for k in key if not (isinstance(k, float) and math.isnan(k)))
            out.append(Check(f"{metric} slope ({label})", claim, bool(res > 0 and rev < 0.02 * res),
                             f"momentum_reversible {rev:.1f} B/layer, resnet {res:.1f} B/layer"
                             + (f" ({100 * rev / res:.2f}%)" if res > 0 else "")))
        if not found:
            out.append(Check(f"{metric} slope", claim, None, "needs resnet and momentum_reversible at two depths or more"))
    rev = summary[summary["p_model"] == "momentum_reversible"]
    errs = rev[(rev["metric"] == "grad_rel_err") & (rev["p_dtype"] == "float64")]["median"]
    claim = "momentum_reversible's gradients match backprop through eq. 4.2 to a relative error under 1e-5 (float64)"
    out.append(Check("gradient of the exact reversal", claim, None if errs.empty else bool(errs.max() < 1e-5),
                     "no float64 momentum_reversible trial" if errs.empty else f"max {errs.max():.3g} over {len(errs)} tensors"))
    recon = rev[rev["metric"] == "state_recon_err"]["median"]
    claim = "momentum_reversible recovers its input bit for bit from the output (error 0)"
    out.append(Check("exact reconstruction", claim, None if recon.empty else bool(recon.max() == 0),
                     "no momentum_reversible trial" if recon.empty else f"max |x~_0 - x_0| = {recon.max():.3g}"))
    return out


smoke = Params(model="momentum_reversible", depth=4, width=8, batch=4, dtype="float64", timing_repeats=2)
