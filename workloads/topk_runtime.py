"""topk_runtime: time and correctness of the relaxed top-k solvers vs n (thesis Fig. 7.4 and beyond).

The thesis times PAV against 100 Dykstra iterations and the hard top-k on a TPU (k = ceil(n/10)).
Two facts change that picture, and every trial records both speed and correctness: 100 Dykstra
iterations are far from converged at large n (the H200 reference numbers, ``docs/anchors.md``), and for
w = 1_k the exact answer is a clipped threshold found by a sort and a search (``threshold``).
Each trial: one untimed call that measures the error against the float64 threshold solution of
the same input, the sparsity, the mask's sum and Dykstra's iterations; then the timed calls
(forward, or forward + backward through the closed-form Jacobian); then the memory pass.
"""

from __future__ import annotations

import contextlib
import math
from typing import Annotated, Literal

import numpy as np
import pandas as pd
import pydantic

from backends import Backend, timer
from backends.init import normal
from core.aggregate import reduce_trials
from core.checks import Check, all_hold, at_least, decide, device_in, distinct, paired_interval, seeds, span
from core.figures import LOG_XY, Custom, Figure, Setting
from core.workload import Context, Float, Metric, OnlyIf, Record, Skip
from core.workload import Params as _Params

name = "topk_runtime"
version = 1
backends = ("torch", "jax")
metrics = (
    Metric("time_s", "s", "lower", "median", "one call (forward, or forward + backward), one sample per repeat"),
    Metric(
        "peak_bytes", "B", "lower", "max", "peak memory of one call (CUDA allocator / XLA compiled; none on torch CPU)"
    ),
    Metric("max_abs_err_vs_exact", "1", "lower", "max", "max |y - y*| against the float64 threshold solution"),
    Metric("iterations", "1", "lower", "max", "Dykstra iterations used (max_iter or fewer when converged to tol)"),
    Metric("nnz_frac", "1", "lower", "median", "fraction of exactly non-zero outputs (k/n for the hard operator)"),
    Metric("mask_sum_err", "1", "lower", "max", "max over rows |sum_i y_i - k| (mask only)"),
)

_EXACT_SOLVERS = ("threshold", "pav")
_IF_RELAXED = OnlyIf(solver=[*_EXACT_SOLVERS, "dykstra"])
_IF_DYKSTRA = OnlyIf(solver=["dykstra"])


class Params(_Params):
    """One operator call on ``batch`` Gaussian rows of length ``n`` (k = ceil(n/10) unless given)."""

    n: pydantic.PositiveInt = pydantic.Field(1000, le=10_000_000, description="row length")
    batch: pydantic.PositiveInt = pydantic.Field(32, le=1_000_000, description="rows per call")
    k: pydantic.NonNegativeInt | None = pydantic.Field(None, description="top-k size; null means ceil(n/10)")
    lam: Annotated[Float | None, _IF_RELAXED] = pydantic.Field(
        0.01, gt=0, description="regularisation strength (null for hard)"
    )
    p: Annotated[Float | None, _IF_RELAXED] = pydantic.Field(2.0, description="p-norm: 2 or 4/3 (null for hard)")
    op: Literal["mask", "mag"] = "mask"
    solver: Literal["threshold", "pav", "dykstra", "hard"] = "threshold"
    direction: Literal["fwd", "fwdbwd"] = "fwd"
    dtype: Literal["float32", "float64"] = "float32"
    max_iter: Annotated[pydantic.PositiveInt | None, _IF_DYKSTRA] = pydantic.Field(
        100, description="Dykstra's iteration cap (Dykstra only)"
    )
    tol: Annotated[Float | None, _IF_DYKSTRA] = pydantic.Field(
        None, ge=0, description="Dykstra's stop change; null: a few ulps (Dykstra only)"
    )
    warmup: pydantic.PositiveInt = 2
    timing_repeats: pydantic.PositiveInt = 5

    @pydantic.model_validator(mode="before")
    @classmethod
    def _k_default(cls, data: dict) -> dict:
        if isinstance(data, dict) and data.get("k") is None:
            with contextlib.suppress(TypeError, ValueError):  # the n field reports the bad value
                return {**data, "k": math.ceil(int(data.get("n", cls.model_fields["n"].default)) / 10)}
        return data

    @pydantic.field_validator("p")
    @classmethod
    def _p_supported(cls, p: float | None) -> float | None:
        if p is None:
            return p
        for allowed in (2.0, 4.0 / 3.0):
            if abs(p - allowed) < 1e-9:
                return allowed
        raise ValueError(f"p={p} is not supported; allowed: 2 or 4/3")

    @pydantic.model_validator(mode="after")
    def _k_fits(self) -> Params:
        if self.k is None or self.k > self.n:
            raise ValueError(f"k={self.k} must be an integer in [0, n={self.n}]")
        if self.solver != "hard" and (self.lam is None or self.p is None):
            raise ValueError(f"solver={self.solver} needs lam and p (got lam={self.lam}, p={self.p})")
        return self


def _relaxed_kwargs(params: Params) -> dict:
    if params.solver == "hard":
        return {"op": params.op, "solver": "hard"}
    return {
        "op": params.op,
        "lam": params.lam,
        "p": params.p,
        "solver": params.solver,
        "max_iter": params.max_iter,
        "tol": params.tol,
    }


def run(params: Params, backend: Backend, ctx: Context) -> list[Record]:
    """Check the output against the exact float64 solution, then time the call, then its memory."""
    if params.solver == "dykstra" and params.p != 2.0:
        raise Skip("Dykstra's projection form needs p = 2 (thesis 7.5: p != 2 is block coordinate ascent in the dual)")
    ops, device, k = backend.ops, backend.device(ctx.device), params.k
    x_np = normal(ctx.seed, (params.batch, params.n), dtype=params.dtype).astype(np.float64)
    x = backend.asarray(x_np, device, params.dtype)
    kwargs = _relaxed_kwargs(params)
    records: list[Record] = []

    y, iterations = ops.topk_solve(x, k, **kwargs)
    y_np = backend.to_numpy(y)
    if params.solver != "hard":
        ref, _ = ops.topk_solve(
            backend.asarray(x_np, device, "float64"), k, op=params.op, lam=params.lam, p=params.p, solver="threshold"
        )
        records.append(Record("max_abs_err_vs_exact", float(np.max(np.abs(y_np - backend.to_numpy(ref))))))
    if iterations is not None:
        records.append(Record("iterations", float(iterations)))
    records.append(Record("nnz_frac", float(np.count_nonzero(y_np)) / y_np.size))
    if params.op == "mask":
        records.append(Record("mask_sum_err", float(np.max(np.abs(y_np.sum(axis=-1) - k)))))

    if params.direction == "fwd":
        single = _forward(ops, params)
    else:
        g = backend.asarray(normal(ctx.seed + 1, (params.batch, params.n), dtype="float64"), device, params.dtype)
        single = lambda xx: ops.topk_vjp(xx, k, g, **kwargs)[1]
    samples = timer(backend, lambda: single(x), kind=ctx.device, warmup=params.warmup, repeats=params.timing_repeats)
    records += [Record("time_s", t, sample=i) for i, t in enumerate(samples)]
    peak = backend.memory.peak_bytes(single, x)  # a separate pass: compiled (jax) or one call (CUDA)
    if peak is not None:
        records.append(Record("peak_bytes", float(peak)))
    return records


def _forward(ops, params: Params):
    """The public operator the way a user calls it (``topk_mask`` etc.), as a function of x."""
    k = params.k
    if params.solver == "hard":
        fn = ops.hard_topk_mask if params.op == "mask" else ops.hard_topk_mag
        return lambda xx: fn(xx, k)
    fn = ops.topk_mask if params.op == "mask" else ops.topk_mag
    kw = {"lam": params.lam, "p": params.p, "solver": params.solver, "max_iter": params.max_iter, "tol": params.tol}
    return lambda xx: fn(xx, k, **kw)


def _per_trial(table: pd.DataFrame) -> pd.DataFrame:
    """One row per trial: each metric reduced as declared (as columns), its parameters, seed and timing samples."""
    per = reduce_trials(table, metrics)
    if per.empty:
        return pd.DataFrame()
    pcols = [c for c in per.columns if c.startswith("p_")]
    wide = per.pivot_table(
        index=["trial_key", "backend", "device_kind", "device_name", "params"],
        columns="metric",
        values="value",
        aggfunc="first",
    ).reset_index()
    wide.columns.name = None
    first = per.groupby("trial_key")[pcols].first().reset_index()
    ok = table[(table["status"] == "ok") & (table["metric"] == "time_s")]
    extra = (
        table.groupby("trial_key")["seed"]
        .first()
        .rename("seed")
        .to_frame()
        .join(ok.groupby("trial_key")["value"].size().rename("time_samples"))
        .fillna({"time_samples": 0})
    )
    return wide.merge(first, on="trial_key").merge(extra.reset_index(), on="trial_key", how="left")


def _time_to_error(table: pd.DataFrame) -> pd.DataFrame:
    """Per solver and n, the fastest trial whose answer is within 1e-6 (float64) / 1e-4 (float32) of the exact one."""
    per = _per_trial(table)
    if per.empty or "max_abs_err_vs_exact" not in per or "time_s" not in per:
        return pd.DataFrame()
    ok = per[per["max_abs_err_vs_exact"] <= np.where(per["p_dtype"] == "float64", 1e-6, 1e-4)]
    keys = ["backend", "p_solver", "p_dtype", "p_direction", "p_n", "p_op", "p_p"]
    return ok.groupby(keys, dropna=False)["time_s"].min().reset_index()


def _draw_time_to_error(table: pd.DataFrame):
    """A minimum over settings (iteration caps, lam) per solver: not a median over repeats, so no declaration."""
    import plotly.graph_objects as go

    reach = _time_to_error(table)
    if reach.empty:
        return None
    fig = go.Figure()
    for (backend, solver, dtype, direction), g in reach.groupby(["backend", "p_solver", "p_dtype", "p_direction"]):
        g = g.sort_values("p_n")
        fig.add_trace(
            go.Scatter(x=g["p_n"], y=g["time_s"], mode="lines+markers", name=f"{backend} {solver} {dtype} {direction}")
        )
    fig.update_layout(xaxis_title="n", yaxis_title="time per call (s)", xaxis_type="log", yaxis_type="log")
    return fig


_DYKSTRA_VS_N = dict(series=("p_max_iter",), facet="p_dtype", where={"p_solver": "dykstra"}, x_title="n", **LOG_XY)
"""Dykstra's curves against n: one line per iteration cap, a panel per dtype."""
figures = (
    Figure(
        "Relaxed top-k: time per call vs n (k = ceil(n/10), Dykstra with 100 iterations)",
        "time_s",
        "p_n",
        thesis="Fig. 7.4",
        series=("p_solver",),
        facet="p_direction",
        where={"p_max_iter": (100, math.nan)},  # nan: the solvers without an iteration cap
        **LOG_XY,
        x_title="n",
        y_title="time per call",
    ),
    Figure(
        "Dykstra: max error vs the exact solution, per iteration cap",
        "max_abs_err_vs_exact",
        "p_n",
        y_title="max |y - y*|",
        **_DYKSTRA_VS_N,
    ),
    Figure(
        "Dykstra: iterations used vs n (stopped by the cap or by its tolerance)", "iterations", "p_n", **_DYKSTRA_VS_N
    ),
    Custom(
        "Time to reach max error <= 1e-6 (float64) / 1e-4 (float32): fastest setting per solver", _draw_time_to_error
    ),
)

settings = (
    Setting(
        "Fig. 7.4",
        thesis={
            "device": "TPU (version not stated)",
            "implementation": "JAX; PAV in numba via pure_callback",
            "solvers": "PAV, Dykstra, hard top-k",
            "Dykstra iterations": "100",
            "k": "ceil(n/10)",
            "n": "not stated in the text",
            "batch": "not stated",
            "lam": "not stated (authors' examples: 1e-2)",
            "p": "2",
            "dtype": "float32 (JAX default)",
            "direction": "not stated",
            "seeds": "not stated",
        },
        ours={
            "device": "device_name",
            "implementation": "backend",
            "solvers": "p_solver",
            "Dykstra iterations": "p_max_iter",
            "k": "p_k",
            "n": "p_n",
            "batch": "p_batch",
            "lam": "p_lam",
            "p": "p_p",
            "dtype": "p_dtype",
            "direction": "p_direction",
            "seeds": "seed",
        },
    ),
)

_X_MAX = 6.0  # |x| of the standard normal inputs: below 6 for all but about 2e-9 of draws
_RANGE = span("p_n", 100, "n")  # every claim below is made for all n of Fig. 7.4: at least two decades of n


def _worst(rows: pd.DataFrame, column: str, by: tuple[str, ...] = ("p_n", "p_dtype")) -> str:
    """The largest ``column`` per value of ``by``, e.g. ``n=100 float32: 1.2e-07``."""
    worst = rows.groupby(list(by))[column].max().reset_index()
    return ", ".join(
        " ".join([f"n={int(r['p_n'])}"] + [str(r[b]) for b in by[1:]]) + f": {r[column]:.1e}"
        for _, r in worst.iterrows()
    )


def _within(rows: pd.DataFrame, column: str, bound) -> tuple[bool, str]:
    return bool((rows[column] <= bound).all()), _worst(rows, column)


def _exact_agree(per: pd.DataFrame) -> Check:
    rows = per[(per["p_solver"] == "pav") & (per["p_dtype"] == "float64")]
    return decide(
        "exact solvers agree",
        "PAV returns an exact solution of the isotonic problem (7.5): it matches the closed-form threshold "
        "solution to 1e-9 in float64 at every n",
        rows,
        lambda r: _within(r, "max_abs_err_vs_exact", 1e-9),
        needs=(_RANGE,),
        figure="section 7.5",
        note="the threshold solver (sort and search) is ours, beyond the thesis",
    )


def _dykstra_100(per: pd.DataFrame) -> Check:
    rows = per[(per["p_solver"] == "dykstra") & (per["p_max_iter"] == 100)]
    return decide(
        "100 Dykstra iterations",
        "We use 100 iterations of Dykstra, and verify that we obtain the same output as PAV "
        "(max error <= 1e-6 in float64, 1e-4 in float32, at every n)",
        rows,
        lambda r: _within(r, "max_abs_err_vs_exact", np.where(r["p_dtype"] == "float64", 1e-6, 1e-4)),
        needs=(_RANGE, distinct("p_n", 3, "sizes n")),
        figure="Fig. 7.4",
        note="the thesis states neither lam nor the range of n; the iterations needed grow with both",
    )


def _dykstra_converged(per: pd.DataFrame) -> list[Check]:
    stopped = (
        per[(per["p_solver"] == "dykstra") & (per["iterations"] < per["p_max_iter"])]
        if "iterations" in per
        else per.iloc[0:0]
    )
    claim = "v^k provably converges to v*: Dykstra stopped by its tolerance gives the exact solution"
    return [
        decide(
            f"converged Dykstra ({dtype})",
            claim + f" (to {bound:g} in {dtype}, at every n)",
            stopped[stopped["p_dtype"] == dtype],
            lambda r, b=bound: _within(r, "max_abs_err_vs_exact", b),
            needs=(_RANGE,),
            figure="section 7.5",
            note=note,
            missing=f"no {dtype} Dykstra trial stopped before its iteration cap",
        )
        for dtype, bound, note in (
            ("float64", 1e-6, ""),
            (
                "float32",
                1e-4,
                "the thesis' convergence is in exact arithmetic; in float32 the stop test (change "
                "<= a few ulps) can fire while updates fall below an ulp, before the answer",
            ),
        )
    ]


def _masks_sum_to_k(per: pd.DataFrame) -> Check:
    rows = per[(per["p_op"] == "mask") & per["mask_sum_err"].notna()] if "mask_sum_err" in per else per.iloc[0:0]
    eps = np.where(rows["p_dtype"] == "float64", 2.3e-16, 1.2e-7)
    # y_i = (s_i - v_i) / lam: one rounding of v_i ~ s_i is eps |x| / lam in y_i (|x| < 6 for Gaussian rows),
    # over n outputs, plus the float64 host sum's own error (k log2(n) eps64)
    amplify = 1.0 + _X_MAX / rows["p_lam"].fillna(1.0)
    rows = rows.assign(bound=rows["p_n"] * eps * amplify + rows["p_k"] * np.log2(rows["p_n"]) * 2.3e-16 + 1e-12)

    def test(r: pd.DataFrame) -> tuple[bool, str]:
        w = r.loc[(r["mask_sum_err"] / r["bound"]).idxmax()]
        return (
            bool((r["mask_sum_err"] <= r["bound"]).all()),
            f"worst |sum - k| against its bound: {w['mask_sum_err']:.2e} vs {w['bound']:.1e} "
            f"({w['backend']} {w['p_solver']} {w['p_dtype']}, n={int(w['p_n'])})",
        )

    return decide(
        "masks sum to k",
        "the relaxed mask lies in P(1_k) = {y in [0, 1]^n : <y, 1> = k} (7.2): "
        "|sum - k| <= n eps (1 + max|x| / lam) + the host sum's rounding, at every n",
        rows,
        test,
        needs=(_RANGE,),
        figure="section 7.3",
    )


def _exactly_sparse(per: pd.DataFrame) -> Check:
    rows = per[(per["p_solver"] != "hard") & (per["p_lam"] <= 0.1)]

    def test(r: pd.DataFrame) -> tuple[bool, str]:
        return (
            bool((r["nnz_frac"] <= 2 * r["p_k"] / r["p_n"]).all()),
            f"max nnz/n = {r['nnz_frac'].max():.3f} (k/n = {(r['p_k'] / r['p_n']).max():.3f})",
        )

    return decide(
        "exactly sparse",
        "our relaxed operators are sparse: exact zeros outside about the top k (nnz <= 2k at lam <= 0.1, at every n)",
        rows,
        test,
        needs=(_RANGE,),
        figure="Fig. 7.3",
    )


def _log_ratio_by_n(rows: pd.DataFrame) -> tuple[bool | str, str]:
    """Per n, the paired interval over seeds of log10(time Dykstra / time PAV); holds when every one is below 0."""
    parts, below = [], []
    for n, g in rows.groupby("p_n"):
        iv = paired_interval(np.log10(g["time_s"]), np.log10(g["time_s_pav"]))
        below.append(iv.side("below"))
        parts.append(f"n={int(n)}: {10**iv.mean:.2g}x PAV's time, log10 ratio {iv.text('+.2f')}")
    return all_hold(below), "; ".join(parts)


def _faster_than_pav(per: pd.DataFrame) -> list[Check]:
    """Fig. 7.4: Dykstra (100 iterations) runs faster than PAV at every n; one check per backend and device."""
    claim = (
        "Dykstra leads to a faster runtime than PAV (100 iterations, k = ceil(n/10)): the paired 95% interval "
        "of log10(time ratio) over seeds lies below 0 at every n"
    )
    needs = (
        _RANGE,
        distinct("p_n", 3, "sizes n"),
        seeds(3),
        at_least("time_samples", 5, "timing samples per trial"),
        device_in(("cuda", "tpu"), "an accelerator (the thesis timed on a TPU)"),
    )
    keys = ["backend", "device_name", "p_n", "p_batch", "p_k", "p_op", "p_dtype", "p_direction", "p_lam", "seed"]
    if per.empty or "time_s" not in per:
        return [decide("Dykstra vs PAV", claim, per.iloc[0:0], _log_ratio_by_n, figure="Fig. 7.4")]
    dyk = per[(per["p_solver"] == "dykstra") & (per["p_max_iter"] == 100) & per["time_s"].notna()]
    pav = per[(per["p_solver"] == "pav") & per["time_s"].notna()]
    both = dyk.merge(pav[keys + ["time_s"]], on=keys, suffixes=("", "_pav"))
    if both.empty:
        return [
            decide(
                "Dykstra vs PAV",
                claim,
                both,
                _log_ratio_by_n,
                figure="Fig. 7.4",
                missing="no Dykstra (100 iterations) and PAV trials of the same setting and seed",
            )
        ]
    return [
        decide(
            f"Dykstra vs PAV ({backend}, {device})",
            claim,
            g,
            _log_ratio_by_n,
            needs=needs,
            figure="Fig. 7.4",
            note=f"the thesis timed on a TPU, this run on {device}; PAV runs on the host "
            "CPU (numba, one row per thread) whatever the device",
        )
        for (backend, device), g in both.groupby(["backend", "device_name"])
    ]


def checks(table: pd.DataFrame) -> list[Check]:
    """PAV exact; Dykstra at 100 iterations and converged vs the exact answer; masks in P(1_k); sparsity; Fig. 7.4's speed."""
    per = _per_trial(table)
    if per.empty:
        per = pd.DataFrame(
            columns=[
                "p_solver",
                "p_dtype",
                "p_max_iter",
                "p_op",
                "p_lam",
                "p_n",
                "iterations",
                "mask_sum_err",
                "max_abs_err_vs_exact",
                "nnz_frac",
                "p_k",
                "backend",
                "seed",
            ]
        )
    return [
        _exact_agree(per),
        _dykstra_100(per),
        *_dykstra_converged(per),
        _masks_sum_to_k(per),
        _exactly_sparse(per),
        *_faster_than_pav(per),
    ]


smoke = Params(
    n=1000,
    batch=8,
    op="mask",
    solver="dykstra",
    direction="fwdbwd",
    dtype="float64",
    lam=0.1,
    max_iter=100,
    warmup=1,
    timing_repeats=3,
)
