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
from core.aggregate import ok_rows, summarize
from core.checks import Check, decide, distinct
from core.figures import LOG_XY, Figure
from core.workload import Context, Metric, Record
from core.workload import Params as _Params

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
        samples = timer(
            backend,
            lambda: backend.ops.matmul(a, b),
            kind=ctx.device,
            warmup=params.warmup,
            repeats=params.timing_repeats,
        )
        work, metric = 2.0 * params.n**3, "flop_per_s"
    else:
        samples = timer(
            backend, lambda: backend.ops.copy(a), kind=ctx.device, warmup=params.warmup, repeats=params.timing_repeats
        )
        work, metric = 2.0 * params.n**2 * _ITEMSIZE[params.dtype], "bytes_per_s"
    return [
        r for i, t in enumerate(samples) for r in (Record("time_s", t, sample=i), Record(metric, work / t, sample=i))
    ]


figures = tuple(
    Figure(title, metric=metric, x="p_n", series=("p_dtype",), where={"p_op": op}, **LOG_XY)
    for title, metric, op in (
        ("Matmul: achieved FLOP/s vs n", "flop_per_s", "matmul"),
        ("Copy: achieved bytes/s vs n (read + write)", "bytes_per_s", "copy"),
    )
)
"""Beyond the thesis: the device's practical limits, which every time in the report can be read against."""

_CLAIM = "matmul throughput does not fall as n grows (its arithmetic intensity grows like n)"


def checks(table: pd.DataFrame) -> list[Check]:
    """Roofline: a larger matmul has more work per byte, so it reaches at least 0.9x the smaller one's FLOP/s."""
    rows = ok_rows(table)
    rows = rows[rows["metric"] == "flop_per_s"]
    groups = list(rows.groupby(["backend", "device_name", "p_dtype"], dropna=False)) or [(("", "", ""), rows)]
    return [
        decide(
            f"{backend} {dtype} {device}".strip() or "matmul throughput",
            _CLAIM,
            group,
            _throughput_holds,
            needs=[distinct("p_n", 2, "sizes n")],
            note="the smallest and the largest n are compared",
        )
        for (backend, device, dtype), group in groups
    ]


def _throughput_holds(rows: pd.DataFrame) -> tuple[bool, str]:
    """The median FLOP/s at the largest n is at least 0.9x that at the smallest n."""
    per_n = summarize(rows, metrics).groupby("p_n")["median"].median().sort_index()
    lo, hi = per_n.index[0], per_n.index[-1]
    return (
        bool(per_n[hi] >= 0.9 * per_n[lo]),
        f"n={lo:g}: {per_n[lo]:.3g} FLOP/s; n={hi:g}: {per_n[hi]:.3g} FLOP/s ({per_n[hi] / per_n[lo]:.2f}x)",
    )


smoke = Params(op="matmul", n=256, dtype="float32", warmup=2, timing_repeats=5)
