"""icl_autoregressive: does a Transformer of L layers learn in context like L steps of gradient descent?

Sequences s_{t+1} = W s_t with a random orthogonal W per sequence (s_1 = 1_d), augmented tokens
e_t = (0, s_t, s_{t-1}); a causal Transformer of L layers (linear attention with layer norm, eq.
6.4 iterated; or softmax attention with an MLP, Fig. 6.10) is trained with Adam to predict the next
state. It is compared on a test set with L steps of gradient descent on the in-context loss
1/2 sum_j ||s_{j+1} - W s_j||^2 (eq. 6.5) from W = 0, with the fixed step size that a line
search over the training sequences finds best, and with the least-squares fit of the context (the
limit of many gradient steps: what no linear in-context estimator beats). Errors count positions
t >= 2 (at t = 1 the context holds no pair). Thesis chapter 6, section 6.6 (Fig. 6.5), 6.B (Fig. 6.10).
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import pydantic

from backends import Backend
from backends.ar_init import ARConfig, ar_sequences, augment
from harness.workload import Check, Context, Float, Metric, Params as _Params, Record, Skip
from results.aggregate import summarize

name = "icl_autoregressive"
version = 1
backends = ("torch", "jax")
metrics = (
    Metric("test_mse", "1", "lower", "last",
           "test mean squared error per coordinate, positions t >= 2; tag transformer (per evaluated epoch, 0 = init), "
           "gd (L steps, best step size) or lstsq (least-squares fit of the context)"),
    Metric("train_loss", "1", "lower", "last", "mean training MSE over the epoch's minibatches"),
    Metric("gd_step_size", "1", "lower", "last", "the step size the line search chose for L gradient steps (tag gd)"),
    Metric("epoch_time_s", "s", "lower", "median", "wall time of one training epoch (compilation excluded)"),
)
_LOSS_START = 1


class Params(_Params):
    """Data, model and training of one run (thesis section 6.6, "Augmented setting")."""

    depth: pydantic.PositiveInt = pydantic.Field(1, le=64, description="L: Transformer layers and gradient steps")
    dim: pydantic.PositiveInt = pydantic.Field(5, le=256, description="d: state dimension (tokens have 3 d)")
    length: pydantic.PositiveInt = pydantic.Field(50, ge=2, le=4096, description="T: tokens per sequence")
    n_train: pydantic.PositiveInt = pydantic.Field(1 << 14, description="training sequences")
    n_test: pydantic.PositiveInt = pydantic.Field(1 << 10, description="test sequences")
    epochs: pydantic.NonNegativeInt = pydantic.Field(2000, le=100_000)
    lr: Float = pydantic.Field(5e-3, gt=0, le=10, description="Adam's learning rate")
    batch: pydantic.PositiveInt = 1024
    softmax: bool = pydantic.Field(False, description="off: linear attention (Fig. 6.5); on: softmax attention + MLP (Fig. 6.10)")
    mlp_dim: pydantic.PositiveInt | None = pydantic.Field(60, le=65536, description="MLP hidden width when softmax is on")
    eval_every: pydantic.PositiveInt = pydantic.Field(10, description="epochs between test evaluations (the last one always)")
    line_search_n: pydantic.PositiveInt = pydantic.Field(4096, description="training sequences the step-size search uses")
    dtype: Literal["float32", "float64"] = "float32"

    @pydantic.model_validator(mode="before")
    @classmethod
    def _null_inapplicable(cls, data: dict) -> dict:
        if isinstance(data, dict) and not pydantic.TypeAdapter(bool).validate_python(data.get("softmax", False)):
            return {**data, "mlp_dim": None}
        return data


def _mse(pred: np.ndarray, targets: np.ndarray) -> float:
    value = float(np.mean((pred[:, _LOSS_START:] - targets[:, _LOSS_START:]) ** 2))
    return value if np.isfinite(value) else float("inf")


def _line_search(mse_of, low: float = 1e-5, high: float = 10.0, grid: int = 49, refine: int = 30) -> tuple[float, float]:
    """The step size with the smallest ``mse_of``: a log grid, then golden sections around its best point."""
    etas = np.geomspace(low, high, grid)
    values = [mse_of(e) for e in etas]
    best = int(np.argmin(values))
    a, b = np.log(etas[max(best - 1, 0)]), np.log(etas[min(best + 1, grid - 1)])
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = mse_of(float(np.exp(c))), mse_of(float(np.exp(d)))
    for _ in range(refine):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = mse_of(float(np.exp(c)))
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = mse_of(float(np.exp(d)))
    candidates = [(values[best], float(etas[best])), (fc, float(np.exp(c))), (fd, float(np.exp(d)))]
    value, eta = min(candidates)
    return eta, value


def _lstsq_predict(states: np.ndarray) -> np.ndarray:
    """W_t = C_t S_t^+ (minimum-norm least squares on the pairs j < t, the limit of GD from 0), prediction W_t s_t."""
    s, nxt = states[:, :-1], states[:, 1:]
    gram = np.cumsum(s[..., :, None] * s[..., None, :], axis=1)
    corr = np.cumsum(nxt[..., :, None] * s[..., None, :], axis=1)
    gram = np.concatenate([np.zeros_like(gram[:, :1]), gram[:, :-1]], axis=1)
    corr = np.concatenate([np.zeros_like(corr[:, :1]), corr[:, :-1]], axis=1)
    w = corr @ np.linalg.pinv(gram, rcond=1e-10, hermitian=True)
    return (w @ s[..., None])[..., 0]


def run(params: Params, backend: Backend, ctx: Context) -> list[Record]:
    """Gradient descent with its best step size and least squares on the test set, then train the Transformer."""
    if params.batch > params.n_train:
        raise Skip(f"batch={params.batch} is larger than n_train={params.n_train}")
    device, ops = backend.device(ctx.device), backend.ops
    train_states = ar_sequences(params.n_train, params.dim, params.length, ctx.seed, stream=0)
    test_states = ar_sequences(params.n_test, params.dim, params.length, ctx.seed, stream=1)
    train_tokens, train_targets = augment(train_states)
    test_tokens, test_targets = augment(test_states)

    search = train_states[: params.line_search_n]
    search_arr = backend.asarray(search, device, "float64")
    eta, _ = _line_search(lambda e: _mse(backend.to_numpy(ops.ar_gd_predict(search_arr, params.depth, e)), search[:, 1:]))
    gd_pred = backend.to_numpy(ops.ar_gd_predict(backend.asarray(test_states, device, "float64"), params.depth, eta))
    records = [Record("test_mse", _mse(gd_pred, test_targets), tag="gd"), Record("gd_step_size", eta, tag="gd"),
               Record("test_mse", _mse(_lstsq_predict(test_states), test_targets), tag="lstsq")]

    config = ARConfig(dim=params.dim, depth=params.depth, softmax=params.softmax,
                      mlp_dim=params.mlp_dim if params.softmax else None, loss_start=_LOSS_START)
    x = backend.asarray(train_tokens, device, params.dtype)
    y = backend.asarray(train_targets, device, params.dtype)
    x_test = backend.asarray(test_tokens, device, params.dtype)
    trainer = ops.ar_transformer_trainer(config, ops.ar_transformer_init(config, ctx.seed, device, params.dtype), params.lr)

    def evaluate(epoch: int) -> None:
        records.append(Record("test_mse", _mse(trainer.predict(x_test, params.batch), test_targets), step=epoch,
                              tag="transformer"))

    evaluate(0)
    trainer.compile(x, y, params.batch)
    rng = np.random.default_rng(np.random.SeedSequence([ctx.seed, 8]))
    for epoch in range(1, params.epochs + 1):
        order = rng.permutation(params.n_train)
        result: list[float] = []
        seconds = backend.time_once(lambda: result.append(trainer.fit_epoch(x, y, order, params.batch)), ctx.device)
        if not np.isfinite(result[0]):
            raise FloatingPointError(f"training loss is {result[0]} at epoch {epoch} (lr={params.lr})")
        records += [Record("train_loss", result[0], step=epoch), Record("epoch_time_s", seconds, step=epoch)]
        if epoch % params.eval_every == 0 or epoch == params.epochs:
            evaluate(epoch)
        ctx.logger.debug("epoch %d: loss %.4g, %.2f s", epoch, result[0], seconds)
    return records


# ----------------------------------------------------------------------------------------- report

_SETUP = ["p_dim", "p_length", "p_n_train", "p_epochs", "p_lr", "p_batch", "p_dtype"]
"""Parameters that must match for trials to sit on one curve over depth."""


def _final_mse(table: pd.DataFrame) -> pd.DataFrame:
    """Median final test MSE per configuration and tag, with ``method``: transformer (linear|softmax), gd, lstsq."""
    rows = summarize(table, metrics)
    rows = rows[rows["metric"] == "test_mse"].copy()
    if rows.empty:
        return rows
    rows["method"] = np.where(rows["tag"] == "transformer",
                              np.where(rows["p_softmax"].astype(bool), "transformer softmax+MLP", "transformer linear"),
                              rows["tag"])
    return rows


def figures(table: pd.DataFrame) -> list:
    """Fig. 6.5 / 6.10: test MSE vs depth, Transformer vs gradient descent (and least squares); training curves."""
    import plotly.graph_objects as go

    final = _final_mse(table)
    if final.empty:
        return []
    figs = []
    fig = go.Figure()
    for (backend, device, method, *_), g in final.groupby(["backend", "device_name", "method", *_SETUP]):
        if method != "transformer linear" and method != "transformer softmax+MLP":
            g = g.drop_duplicates("p_depth")  # gd and lstsq do not depend on the Transformer's settings
        g = g.sort_values("p_depth")
        fig.add_trace(go.Scatter(x=g["p_depth"], y=g["median"], mode="lines+markers", name=f"{method} {backend} ({device})",
                                 line=dict(dash="dot" if method == "lstsq" else "solid"),
                                 error_y=dict(type="data", symmetric=False, array=g["q75"] - g["median"],
                                              arrayminus=g["median"] - g["q25"])))
    fig.update_layout(title="Fig. 6.5 / 6.10: test MSE vs depth L, Transformer vs L steps of gradient descent "
                            "(lstsq: least squares on the context; median, IQR)",
                      xaxis_title="depth L (layers / gradient steps)", yaxis_title="test MSE", yaxis_type="log")
    figs.append(fig)

    steps = summarize(table, metrics, by_step=True)
    curves = steps[(steps["metric"].isin(["train_loss", "test_mse"])) & (steps["tag"].isna() | (steps["tag"] == "transformer"))]
    if not curves.empty:
        shown = "torch" if "torch" in set(curves["backend"]) else min(set(curves["backend"]))
        curves = curves[curves["backend"] == shown]
        fig = go.Figure()
        for (metric, soft, depth, *_), g in curves.groupby(["metric", "p_softmax", "p_depth", *_SETUP]):
            g = g.sort_values("step")
            kind = "softmax+MLP" if soft else "linear"
            fig.add_trace(go.Scatter(x=g["step"], y=g["median"], mode="lines", name=f"{metric} {kind} L={depth}",
                                     line=dict(dash="solid" if metric == "test_mse" else "dot")))
        fig.update_layout(title=f"Training: train loss (dotted) and test MSE (solid) per epoch ({shown})",
                          xaxis_title="epoch", yaxis_title="MSE", yaxis_type="log")
        figs.append(fig)
    return figs


def _ratios(final: pd.DataFrame) -> dict[tuple, dict[tuple[bool, int], float]]:
    """Per (backend, device, setup): {(softmax, depth): median transformer MSE / median GD MSE}."""
    out: dict[tuple, dict[tuple[bool, int], float]] = {}
    for key, g in final.groupby(["backend", "device_name", *_SETUP]):
        gd = g[g["tag"] == "gd"].groupby("p_depth")["median"].median()
        for _, row in g[g["tag"] == "transformer"].iterrows():
            if row["p_depth"] in gd.index and gd[row["p_depth"]] > 0:
                out.setdefault(key, {})[(bool(row["p_softmax"]), int(row["p_depth"]))] = float(row["median"] / gd[row["p_depth"]])
    return out


def checks(table: pd.DataFrame) -> list[Check]:
    """Linear Transformer vs GD: comparable for L <= 2, GD far ahead from L = 3; softmax+MLP ahead of GD (Fig. 6.5, 6.10)."""
    final = _final_mse(table)
    claims = (
        ("L <= 2, linear", "for L <= 2 the linear-attention Transformer and L steps of gradient descent are comparable: "
         "test MSE ratio Transformer / GD within [0.1, 10] (Fig. 6.5)", False, lambda d: d <= 2, lambda r: 0.1 <= r <= 10),
        ("L >= 3, linear", "from L = 3, gradient descent is ahead of the linear-attention Transformer by orders of magnitude: "
         "ratio Transformer / GD >= 10 at every L >= 3 (Fig. 6.5)", False, lambda d: d >= 3, lambda r: r >= 10),
        ("softmax+MLP", "a softmax+MLP Transformer stays ahead of gradient descent: ratio Transformer / GD < 1 at every L "
         "(Fig. 6.10)", True, lambda d: True, lambda r: r < 1),
    )
    ratios = _ratios(final) if not final.empty else {}
    out = []
    for label, claim, softmax, depths, test in claims:
        found = False
        for (backend, device, *setup), per in ratios.items():
            sel = {d: r for (s, d), r in sorted(per.items()) if s == softmax and depths(d)}
            if not sel:
                continue
            found = True
            measured = ", ".join(f"L={d}: {r:.3g}" for d, r in sel.items())
            out.append(Check(f"{label}, {backend} ({device}), T={int(setup[1])}, epochs={int(setup[3])}", claim,
                             all(test(r) for r in sel.values()), f"Transformer/GD MSE ratio {measured}"))
        if not found:
            out.append(Check(label, claim, None, "no trial with these depths and this attention"))
    return out


smoke = Params(depth=2, dim=3, length=12, n_train=128, n_test=64, epochs=3, lr=5e-3, batch=32, eval_every=1,
               line_search_n=128)
