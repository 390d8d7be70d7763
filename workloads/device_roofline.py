"""device_roofline: achieved FLOP/s of a matmul and bytes/s of a copy, the device's practical limits.

Every report shows these beside the workloads' numbers, so a time can be read against what the
device can do at all.
"""
from __future__ import annotations

from typing import Literal

import pandas as pd
import pydantic

from backends import Backend, timer
from backends.init import normal
from harness.workload import Check, Context, Metric, Params as _Params, Record
from results.aggregate import summarize

name = "device_roofline"
version = 1
backends = ("torch", "jax")
metrics = (
    Metric("time_s", "s", "lower", "median", "time of one call, one sample per timing repeat"),
    Metric("flop_per_s", "FLOP/s", "higher", "median", "matmul: 2 n^3 / time"),
    Metric("bytes_per_s", "B/s", "higher", "median", "copy: 2 n^2 itemsize / time (read + write)"),
)

_ITEMSIZE = {"float32": 4, "bfloat16": 2}


class Params(_Params):
    """One call on an n x n array: a matmul (compute-bound at large n) or a copy (memory-bound)."""

    op: Literal["matmul", "copy"] = "matmul"
    n: pydantic.PositiveInt = pydantic.Field(1024, le=65536, description="side of the square operands")
    dtype: Literal["float32", "bfloat16"] = "float32"
    warmup: pydantic.PositiveInt = 3
    timing_repeats: pydantic.PositiveInt = 10


def run(params: Params, backend: Backend, ctx: Context) -> list[Record]:
    """Time the call; record each sample's time and its achieved FLOP/s or bytes/s."""
    device = backend.device(ctx.device)
    shape = (params.n, params.n)
    a = backend.asarray(normal(ctx.seed, shape), device, params.dtype)
    if params.op == "matmul":
        b = backend.asarray(normal(ctx.seed + 1, shape), device, params.dtype)
        samples = timer(backend, lambda: backend.ops.matmul(a, b), kind=ctx.device,
                        warmup=params.warmup, repeats=params.timing_repeats)
        work, metric = 2.0 * params.n**3, "flop_per_s"
    else:
        samples = timer(backend, lambda: backend.ops.copy(a), kind=ctx.device,
                        warmup=params.warmup, repeats=params.timing_repeats)
        work, metric = 2.0 * params.n**2 * _ITEMSIZE[params.dtype], "bytes_per_s"
    return [r for i, t in enumerate(samples)
            for r in (Record("time_s", t, sample=i), Record(metric, work / t, sample=i))]


def figures(table: pd.DataFrame) -> list:
    """Achieved FLOP/s (matmul) and bytes/s (copy) vs n, per backend, device and dtype, log-log."""
    import plotly.graph_objects as go

    summary = summarize(table, metrics)
    figs = []
    for metric, title in (("flop_per_s", "Matmul: achieved FLOP/s vs n"), ("bytes_per_s", "Copy: achieved bytes/s vs n")):
        rows = summary[summary["metric"] == metric].sort_values("p_n")
        if rows.empty:
            continue
        fig = go.Figure()
        for (backend, device, dtype), g in rows.groupby(["backend", "device_name", "p_dtype"]):
            fig.add_trace(go.Scatter(
                x=g["p_n"], y=g["median"], mode="lines+markers", name=f"{backend} {dtype} ({device})",
                error_y=dict(type="data", symmetric=False, array=g["q75"] - g["median"], arrayminus=g["median"] - g["q25"])))
        fig.update_layout(title=title, xaxis_title="n", yaxis_title=rows["unit"].iloc[0], xaxis_type="log", yaxis_type="log")
        figs.append(fig)
    return figs


def checks(table: pd.DataFrame) -> list[Check]:
    """Roofline: a larger matmul has more work per byte, so it must reach at least the smaller one's FLOP/s."""
    summary = summarize(table, metrics)
    rows = summary[summary["metric"] == "flop_per_s"]
    out = []
    for (backend, device, dtype), g in rows.groupby(["backend", "device_name", "p_dtype"]):
        g = g.sort_values("p_n")
        claim = "matmul throughput does not fall as n grows (arithmetic intensity grows like n)"
        if len(g) < 2:
            out.append(Check(f"{backend} {dtype} {device}", claim, None, "one size only"))
            continue
        lo, hi = g.iloc[0], g.iloc[-1]
        out.append(Check(f"{backend} {dtype} {device}", claim, bool(hi["median"] >= 0.9 * lo["median"]),
                         f"n={lo['p_n']}: {lo['median']:.3g} FLOP/s; n={hi['p_n']}: {hi['median']:.3g} FLOP/s"))
    return out


smoke = Params(op="matmul", n=256, dtype="float32", warmup=2, timing_repeats=5)
