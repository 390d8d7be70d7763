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
from typing import Annotated, Literal

import numpy as np
import pandas as pd
import pydantic

from backends import Backend, timer
from backends.init import normal
from backends.resnets import MODELS, TORCHVISION
from core.aggregate import reduce_trials
from core.checks import Check, decide, distinct, span
from core.figures import LOG_XY, Figure, Setting
from core.workload import Context, Float, Metric, OnlyIf, Record, Skip
from core.workload import Params as _Params

name = "memory_depth"
version = 1
backends = ("torch", "jax")
metrics = (
    Metric(
        "peak_bytes",
        "B",
        "lower",
        "median",
        "peak memory above the pre-call level during one forward+backward (CUDA allocator; torch CPU: "
        "profiler allocation events; JAX: compiled temp + output bytes)",
    ),
    Metric(
        "activation_bytes",
        "B",
        "lower",
        "median",
        "peak_bytes minus the gradients' bytes (parameters and inputs are already outside the peak)",
    ),
    Metric(
        "saved_bytes",
        "B",
        "lower",
        "median",
        "bytes the forward keeps for the backward, inputs and parameters excluded",
    ),
    Metric("time_s", "s", "lower", "median", "one forward+backward, one sample per timing repeat"),
    Metric(
        "grad_rel_err",
        "1",
        "lower",
        "max",
        "||g - g_ref|| / ||g_ref|| per parameter tensor (tag), g_ref by backprop through the same forward",
    ),
    Metric("state_recon_err", "1", "lower", "max", "max |x~_0 - x_0| of the input the backward's reversal recovers"),
)

_MOMENTUM = ("momentum", "momentum_reversible")
_RECONSTRUCTING = ("momentum_reversible", "revnet", "adjoint_euler", "adjoint_heun")
_ITEMSIZE = {"float32": 4, "float64": 8}
_IF_OWN_NET = OnlyIf(block=["mlp", "conv"])
"""A torchvision block brings its own depth, width and activation."""
_IF_IMAGES = OnlyIf(block=["conv", *TORCHVISION], fill=lambda v: 32 if v["block"] in TORCHVISION else 8)


class Params(_Params):
    """One network and one batch: model, depth, width, batch, gamma, tied weights, block, dtype."""

    model: Literal[MODELS] = "momentum_reversible"  # type: ignore[valid-type]
    depth: Annotated[pydantic.PositiveInt | None, _IF_OWN_NET] = pydantic.Field(
        10, description="layers (None for a torchvision block)"
    )
    width: Annotated[pydantic.PositiveInt | None, _IF_OWN_NET] = pydantic.Field(
        500, description="d: features, or channels of a conv block"
    )
    hidden: Annotated[pydantic.PositiveInt | None, _IF_OWN_NET] = pydantic.Field(
        None, description="hidden width of f; None: width"
    )
    batch: pydantic.PositiveInt = 500
    gamma: Annotated[Float | None, OnlyIf(model=_MOMENTUM)] = pydantic.Field(
        None, ge=0.0, le=1.0, description="momentum term; None: 1 - 1/(50 depth) (Fig. 4.2), 0.9 torchvision"
    )
    tied: Annotated[bool | None, _IF_OWN_NET] = pydantic.Field(True, description="one set of weights for every layer")
    block: Literal[("mlp", "conv", *TORCHVISION)] = "mlp"  # type: ignore[valid-type]
    activation: Annotated[Literal["tanh", "relu"] | None, _IF_OWN_NET] = "tanh"
    image_size: Annotated[pydantic.PositiveInt | None, _IF_IMAGES] = pydantic.Field(
        None, description="side of the images (conv: 8, torchvision: 32)"
    )
    dtype: Literal["float32", "float64"] = "float32"
    warmup: pydantic.PositiveInt = 1
    timing_repeats: pydantic.PositiveInt = 3
    reference: bool = pydantic.Field(True, description="also measure grad_rel_err and state_recon_err")


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
    kwargs = dict(
        depth=params.depth,
        width=params.width,
        hidden=params.hidden,
        block=params.block,
        activation=params.activation or "tanh",
        tied=bool(params.tied),
        gamma=params.gamma,
        image_size=params.image_size,
        seed=ctx.seed,
        dtype=params.dtype,
        device=device,
    )
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
        peak = backend.memory.host_peak_bytes(step, weights, x, g)
    if peak is not None:
        grad_bytes = _nbytes(_flat(step(weights, x, g)), params.dtype)
        records += [Record("peak_bytes", float(peak)), Record("activation_bytes", float(peak - grad_bytes))]
    samples = timer(
        backend, lambda: step(weights, x, g), kind=ctx.device, warmup=params.warmup, repeats=params.timing_repeats
    )
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
            records.append(
                Record(
                    "grad_rel_err", float(np.linalg.norm(a - b)) / denom if denom else float(np.linalg.norm(a)), tag=tag
                )
            )
    if params.model in _RECONSTRUCTING and params.block not in TORCHVISION:
        every = params.depth
        seen = backend.to_numpy(backend.ops.residual_trajectory(net, x, every))
        back = backend.to_numpy(backend.ops.residual_reconstruct(net, x, every))
        records.append(Record("state_recon_err", float(np.max(np.abs(back[0] - seen[0])))))
    return records


_MLP = {"p_block": "mlp"}
_VS_DEPTH = dict(series=("p_model",), facet="p_tied", where=_MLP, x_title="depth")
"""A curve per model against depth, MLP blocks, tied and untied weights side by side."""
figures = (
    Figure(
        "Activation memory of one forward+backward vs depth (peak minus gradients)",
        "activation_bytes",
        "p_depth",
        thesis="Fig. 4.2",
        y_title="activation memory",
        **_VS_DEPTH,
    ),
    Figure(
        "Bytes the forward saves for the backward vs depth",
        "saved_bytes",
        "p_depth",
        y_title="saved for backward",
        **_VS_DEPTH,
    ),
    Figure(
        "Activation memory of one forward+backward vs batch size",
        "activation_bytes",
        "p_batch",
        thesis="Fig. 4.7 (upper)",
        series=("p_model",),
        facet="p_block",
        x_title="batch size",
        y_title="activation memory",
    ),
    Figure("Time of one forward+backward vs depth", "time_s", "p_depth", y_title="time", **_VS_DEPTH, **LOG_XY),
)

settings = (
    Setting(
        "Fig. 4.2",
        thesis={
            "model": "residual MLP f(x) = W2^T tanh(W1 x + b), the same weights at every layer",
            "width d": "500",
            "batch": "500",
            "gamma": "1 - 1/(50 depth)",
            "measure": "memory profiler, one gradient computation",
            "device": "not stated",
        },
        ours={
            "model": "p_model",
            "width d": "p_width",
            "batch": "p_batch",
            "depths": "p_depth",
            "tied": "p_tied",
            "gamma": "p_gamma",
            "dtype": "p_dtype",
            "device": "device_name",
        },
        where=_MLP,
    ),
    Setting(
        "Fig. 4.7 (upper)",
        thesis={
            "model": "ResNet-152 and Momentum ResNet-152 (gamma 0.9); ResNet-1201 on CIFAR-10",
            "data": "ImageNet (224x224); CIFAR-10 (32x32)",
            "batch": "several",
            "measure": "memory profiler, one training epoch",
            "device": "not stated",
        },
        ours={
            "model": "p_model",
            "block": "p_block",
            "image size": "p_image_size",
            "batch": "p_batch",
            "dtype": "p_dtype",
            "device": "device_name",
        },
    ),
)

_CONFIG = ["p_block", "p_width", "p_hidden", "p_tied", "p_dtype", "p_activation", "p_image_size"]
"""A memory check compares models within one value of these columns (and of the batch, or the depth)."""
_FLAT = 0.02
"""A memory-free backward's bytes per layer, as a share of backprop's, below which memory counts as flat."""
_FIG42 = {"p_width": 500, "p_batch": 500}
_DEEP = 16
"""Fewest layers at which the batch claim is decided: "especially for very deep models" (ResNet-152, 1201)."""


def _trials(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One value per trial of ``metric`` (no tag, or the max over tags), reduced as declared."""
    rows = reduce_trials(table, metrics)
    return rows[rows["metric"] == metric]


def _groups(rows: pd.DataFrame, columns: list[str], x: str):
    """(parameters, rows) per configuration that varies ``x``; all rows as one group when none does."""
    keys = [c for c in columns if c in rows]
    filled = rows.assign(**{c: rows[c].astype(object).where(rows[c].notna(), "-") for c in keys})
    groups = [
        ({k: v for k, v in zip(keys, key) if v != "-"}, rows.loc[group.index])
        for key, group in filled.groupby(keys, sort=False)
    ]
    varying = [(d, g) for d, g in groups if g[x].nunique() > 1]
    return varying or [({}, rows)]


def _text(value: object) -> str:
    """A parameter value as a label shows it: 20, not 20.0 (a column with nulls holds floats)."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def _label(d: dict) -> str:
    return ", ".join(f"{k.removeprefix('p_')}={_text(v)}" for k, v in d.items()) or "all trials"


def _slope(rows: pd.DataFrame, x: str) -> float | None:
    """Least-squares bytes per unit of ``x`` of the median over repeats; None with fewer than two values of ``x``."""
    curve = rows.groupby(x)["value"].median()
    return float(np.polyfit(curve.index.to_numpy(float), curve.to_numpy(float), 1)[0]) if len(curve) > 1 else None


def _flat_test(model: str, x: str, share: float):
    """Test: in every backend, ``model``'s bytes per unit of ``x`` are under ``share`` of backprop's (resnet's)."""

    def test(rows: pd.DataFrame) -> tuple[bool | None, str]:
        found, parts = [], []
        for backend, g in rows.groupby("backend"):
            mine, res = _slope(g[g["p_model"] == model], x), _slope(g[g["p_model"] == "resnet"], x)
            if mine is None or res is None:
                continue
            found.append(res > 0 and mine < share * res)
            unit = "layer" if x == "p_depth" else "example"
            parts.append(
                f"{backend}: {model} {mine:,.0f} B/{unit}, resnet {res:,.0f} B/{unit}"
                + (f" ({mine / res:.2%})" if res > 0 else "")
            )
        if not found:
            return None, f"needs resnet and {model} at two values of {x.removeprefix('p_')} or more"
        return all(found), "; ".join(parts)

    return test


def _note(d: dict) -> str:
    off = [f"{k.removeprefix('p_')} {_text(d.get(k, '-'))} (thesis {v})" for k, v in _FIG42.items() if d.get(k) != v]
    return "thesis setting differs: " + ", ".join(off) if off else ""


def _depth_checks(table: pd.DataFrame) -> list[Check]:
    """Fig. 4.2 and section 2.4: memory-free backwards keep activation memory flat in depth."""
    out = []
    claims = {
        "momentum_reversible": ("Fig. 4.2", "Momentum ResNets give a nearly constant memory footprint"),
        "adjoint_euler": ("section 2.4", "the adjoint method backpropagates without storing activations"),
        "adjoint_heun": ("section 2.4", "Heun's reversal backpropagates without storing activations"),
    }
    for metric in ("activation_bytes", "saved_bytes"):
        rows = _trials(table, metric)
        for d, g in _groups(rows, _CONFIG + ["p_batch"], "p_depth"):
            for model, (figure, words) in claims.items():
                if model != "momentum_reversible" and not (g["p_model"] == model).any():
                    continue
                pick = g[g["p_model"].isin([model, "resnet"])]
                out.append(
                    decide(
                        f"{metric} flat in depth, {model}: {_label(d)}",
                        f"{words}: {model}'s {metric} grows with depth at under {_FLAT:.0%} of the ResNet's "
                        "(backprop) rate",
                        pick,
                        _flat_test(model, "p_depth", _FLAT),
                        missing=f"no {model} trial",
                        needs=(span("p_depth", 8, "depths"),),
                        figure=figure,
                        note=_note(d),
                    )
                )
    return out


def _deep(rows: pd.DataFrame) -> str | None:
    """The batch claim is about deep models: depth at least ``_DEEP`` (a torchvision block counts as deep)."""
    depths = rows["p_depth"].dropna()
    return None if depths.empty or depths.min() >= _DEEP else f"depth {depths.min():g} < {_DEEP}"


def _batch_checks(table: pd.DataFrame) -> list[Check]:
    """Fig. 4.7 (upper): a Momentum ResNet's memory grows more slowly with the batch than a ResNet's."""
    out = []
    rows = _trials(table, "activation_bytes")
    rows = rows[rows["p_model"].isin(["resnet", "momentum_reversible"])]
    for d, g in _groups(rows, _CONFIG + ["p_depth"], "p_batch"):
        out.append(
            decide(
                f"memory grows more slowly with the batch: {_label(d)}",
                "Momentum ResNets can benefit from increased batch size, especially for very deep models: "
                "their activation memory grows with the batch more slowly than the ResNet's",
                g,
                _flat_test("momentum_reversible", "p_batch", 1.0),
                needs=(span("p_batch", 4, "batch sizes"), distinct("p_batch", 3, "batch sizes"), _deep),
                figure="Fig. 4.7 (upper)",
                note="" if d.get("p_block") == "resnet152" else "thesis: ResNet-152 on ImageNet",
            )
        )
    return out


def _exact_checks(table: pd.DataFrame) -> list[Check]:
    """Section 4.3.1: the reversible Momentum ResNet's gradient is backprop's and its input is recovered bit for bit."""
    grads = _trials(table, "grad_rel_err")
    grads = grads[(grads["p_model"] == "momentum_reversible") & (grads["p_dtype"] == "float64")]
    recon = _trials(table, "state_recon_err")
    recon = recon[recon["p_model"] == "momentum_reversible"]
    return [
        decide(
            "gradient of the exact reversal",
            "momentum_reversible's gradients match backprop through eq. 4.2 to a relative error under 1e-5 (float64)",
            grads,
            lambda r: (bool(r["value"].max() < 1e-5), f"max {r['value'].max():.3g} over {len(r)} trial values"),
            needs=(span("p_depth", 8, "depths"),),
            figure="section 4.3.1",
            missing="no float64 momentum_reversible trial",
        ),
        decide(
            "exact reconstruction",
            "momentum_reversible recovers its input bit for bit from the output (error 0)",
            recon,
            lambda r: (bool(r["value"].max() == 0), f"max |x~_0 - x_0| = {r['value'].max():.3g}"),
            needs=(span("p_depth", 8, "depths"),),
            figure="section 4.3.1",
            missing="no momentum_reversible trial",
        ),
    ]


def checks(table: pd.DataFrame) -> list[Check]:
    """Flat memory in depth (Fig. 4.2, section 2.4), slower growth with the batch (Fig. 4.7), exact reversal (4.3.1)."""
    if table.empty:
        return []
    return _depth_checks(table) + _batch_checks(table) + _exact_checks(table)


smoke = Params(model="momentum_reversible", depth=4, width=8, batch=4, dtype="float64", timing_repeats=2)
