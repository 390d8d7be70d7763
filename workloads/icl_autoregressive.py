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

from typing import Annotated, Literal

import numpy as np
import pandas as pd
import pydantic

from backends import Backend
from backends.ar_transformer import ARConfig, ar_sequences, augment
from core.aggregate import reduce_trials
from core.checks import Check, all_hold, decide, not_measured, paired_interval, pairs, seeds
from core.figures import Figure, Setting, per_epoch
from core.training import passes
from core.workload import Context, Float, Metric, OnlyIf, Record, Skip
from core.workload import Params as _Params

name = "icl_autoregressive"
version = 2
backends = ("torch", "jax")
metrics = (
    Metric(
        "test_mse",
        "1",
        "lower",
        "last",
        "the Transformer's test mean squared error per coordinate, positions t >= 2, per evaluated epoch (0 = init)",
    ),
    Metric(
        "gd_mse",
        "1",
        "lower",
        "last",
        "test MSE of L steps of gradient descent on the in-context loss (6.5), best step size",
    ),
    Metric(
        "lstsq_mse",
        "1",
        "lower",
        "last",
        "test MSE of the least-squares fit of the context: the floor L steps of gradient descent approach",
    ),
    Metric("train_loss", "1", "lower", "last", "mean training MSE over the epoch's minibatches"),
    Metric("gd_step_size", "1", "lower", "last", "the step size the line search chose for L gradient steps"),
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
    softmax: bool = pydantic.Field(
        False, description="off: linear attention (Fig. 6.5); on: softmax attention + MLP (Fig. 6.10)"
    )
    mlp_dim: Annotated[pydantic.PositiveInt | None, OnlyIf(softmax=[True])] = pydantic.Field(
        60, le=65536, description="MLP hidden width when softmax is on"
    )
    eval_every: pydantic.PositiveInt = pydantic.Field(
        10, description="epochs between test evaluations (the last one always)"
    )
    line_search_n: pydantic.PositiveInt = pydantic.Field(
        4096, description="training sequences the step-size search uses"
    )
    dtype: Literal["float32", "float64"] = "float32"


def _mse(pred: np.ndarray, targets: np.ndarray) -> float:
    value = float(np.mean((pred[:, _LOSS_START:] - targets[:, _LOSS_START:]) ** 2))
    return value if np.isfinite(value) else float("inf")


def _line_search(
    mse_of, low: float = 1e-5, high: float = 10.0, grid: int = 49, refine: int = 30
) -> tuple[float, float]:
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


def _context_moments(states: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """S_t = sum_{j<t} s_j s_j^T and C_t = sum_{j<t} s_{j+1} s_j^T per position, and the inputs s_t (float64)."""
    s, nxt = states[:, :-1], states[:, 1:]
    gram = np.cumsum(s[..., :, None] * s[..., None, :], axis=1)
    corr = np.cumsum(nxt[..., :, None] * s[..., None, :], axis=1)
    gram = np.concatenate([np.zeros_like(gram[:, :1]), gram[:, :-1]], axis=1)
    corr = np.concatenate([np.zeros_like(corr[:, :1]), corr[:, :-1]], axis=1)
    return gram, corr, s


def _lstsq_predict(states: np.ndarray) -> np.ndarray:
    """W_t = C_t S_t^+ (minimum-norm least squares on the pairs j < t, the limit of GD from 0), prediction W_t s_t."""
    gram, corr, s = _context_moments(states)
    w = corr @ np.linalg.pinv(gram, rcond=1e-10, hermitian=True)
    return (w @ s[..., None])[..., 0]


def _gd_mse_of(states: np.ndarray, steps: int):
    """eta -> test MSE of ``steps`` gradient steps from W = 0 with step eta, in closed form (for the line search).

    With S_t = U diag(lam) U^T, W_L = C_t U diag((1 - (1 - eta lam)^L) / lam) U^T: the same iterates as
    ``ar_gd_predict`` in exact arithmetic, at the cost of one eigendecomposition for every step size.
    """
    gram, corr, s = _context_moments(states)
    lam, vecs = np.linalg.eigh(gram)
    coords = np.einsum("ntij,nti->ntj", vecs, s)
    mapped = corr @ vecs
    targets = states[:, 1:]

    def mse(eta: float) -> float:
        x = eta * lam
        with np.errstate(over="ignore", invalid="ignore"):
            gain = np.where(np.abs(x) > 1e-12, (1.0 - (1.0 - x) ** steps) / np.where(lam == 0, 1.0, lam), eta * steps)
        return _mse(np.einsum("ntij,ntj->nti", mapped, gain * coords), targets)

    return mse


def run(params: Params, backend: Backend, ctx: Context) -> list[Record]:
    """Gradient descent with its best step size and least squares on the test set, then train the Transformer."""
    if params.batch > params.n_train:
        raise Skip(f"batch={params.batch} is larger than n_train={params.n_train}")
    device, ops = backend.device(ctx.device), backend.ops
    train_states = ar_sequences(params.n_train, params.dim, params.length, ctx.seed, stream=0)
    test_states = ar_sequences(params.n_test, params.dim, params.length, ctx.seed, stream=1)
    train_tokens, train_targets = augment(train_states)
    test_tokens, test_targets = augment(test_states)

    eta, _ = _line_search(_gd_mse_of(train_states[: params.line_search_n], params.depth))
    gd_pred = backend.to_numpy(ops.ar_gd_predict(backend.asarray(test_states, device, "float64"), params.depth, eta))
    records = [
        Record("gd_mse", _mse(gd_pred, test_targets)),
        Record("gd_step_size", eta),
        Record("lstsq_mse", _mse(_lstsq_predict(test_states), test_targets)),
    ]

    config = ARConfig(
        dim=params.dim,
        depth=params.depth,
        softmax=params.softmax,
        mlp_dim=params.mlp_dim if params.softmax else None,
        loss_start=_LOSS_START,
    )
    x = backend.asarray(train_tokens, device, params.dtype)
    y = backend.asarray(train_targets, device, params.dtype)
    x_test = backend.asarray(test_tokens, device, params.dtype)
    trainer = ops.ar_transformer_trainer(
        config, ops.ar_transformer_init(config, ctx.seed, device, params.dtype), params.lr
    )

    def evaluate(epoch: int) -> None:
        records.append(Record("test_mse", _mse(trainer.predict(x_test, params.batch), test_targets), step=epoch))

    evaluate(0)
    trainer.compile(x, y, params.batch)
    rng = np.random.default_rng(np.random.SeedSequence([ctx.seed, 8]))
    orders = ((epoch, rng.permutation(params.n_train)) for epoch in range(1, params.epochs + 1))
    fit = lambda _, order: trainer.fit_epoch(x, y, order, params.batch)
    for done in passes(backend, ctx.device, fit, orders, lr=params.lr):
        records += [
            Record("train_loss", done.loss, step=done.step),
            Record("epoch_time_s", done.seconds, step=done.step),
        ]
        if done.step % params.eval_every == 0 or done.step == params.epochs:
            evaluate(done.step)
        ctx.logger.debug("epoch %d: loss %.4g, %.2f s", done.step, done.loss, done.seconds)
    return records


# ----------------------------------------------------------------------------------------- report

_THESIS = {"p_dim": 5, "p_length": 50, "p_n_train": 1 << 14, "p_epochs": 2000, "p_batch": 1024, "p_lr": 5e-3}
"""The thesis' setting (section 6.6; batch from the authors' code, ``augmented.py`` of https://github.com/michaelsdr/ical)."""
_THESIS_STEPS = 2000 * ((1 << 14) // 1024)
_MIN_STEPS = 1000
"""Adam steps below which a Transformer is too little trained for its error to say anything (thesis: 32,000)."""
_SETUP = ["p_dim", "p_length", "p_n_train", "p_n_test", "p_epochs", "p_lr", "p_batch", "p_dtype"]
"""Parameters that must match for trials to sit on one curve over depth."""

_CURVES = dict(
    x="p_depth",
    metric=("test_mse", "gd_mse", "lstsq_mse"),
    log_y=True,
    x_title="depth L (Transformer layers / gradient steps)",
    y_title="test MSE",
)
_PER_DEPTH = dict(series=("p_depth",), facet="p_softmax", log_y=True, x_title="epoch")
"""The per-epoch curves: one line per depth, linear attention and softmax + MLP side by side."""
figures = (
    Figure(
        "Test MSE vs depth: linear-attention Transformer, L steps of gradient descent, least-squares floor",
        thesis="Fig. 6.5",
        where={"p_softmax": False},
        **_CURVES,
    ),
    Figure(
        "Test MSE vs depth: softmax + MLP Transformer, L steps of gradient descent, least-squares floor",
        thesis="Fig. 6.10",
        where={"p_softmax": True},
        **_CURVES,
    ),
    per_epoch(
        "Training loss vs epoch, linear attention (off) and softmax + MLP (on), per depth",
        metric="train_loss",
        y_title="training MSE",
        thesis="Fig. 6.9",
        **_PER_DEPTH,
    ),
    per_epoch(
        "Transformer test MSE vs epoch (0 = initialisation), per depth",
        metric="test_mse",
        y_title="test MSE",
        **_PER_DEPTH,
    ),
    Figure(
        "Training epoch time vs depth",
        metric="epoch_time_s",
        x="p_depth",
        series=("p_softmax",),
        x_title="depth L",
        y_title="epoch time",
    ),
)

_OURS = {
    "training sequences": "p_n_train",
    "test sequences": "p_n_test",
    "dimension d": "p_dim",
    "sequence length T": "p_length",
    "depths L": "p_depth",
    "optimiser, lr": "p_lr",
    "batch": "p_batch",
    "epochs": "p_epochs",
    "seeds": "seed",
    "backend": "backend",
    "device": "device_name",
}
_THESIS_SETTING = {
    "training sequences": "2^14 = 16,384",
    "test sequences": "2^10 = 1,024",
    "dimension d": "d = 5",
    "sequence length T": "T = 50",
    "depths L": "1 ... 6",
    "optimiser, lr": "Adam, 5e-3",
    "batch": "1,024 (authors' code)",
    "epochs": "2,000 (32,000 Adam steps)",
    "seeds": "1 (not stated)",
    "backend": "PyTorch",
    "device": "GPU (not stated)",
}
settings = (
    Setting(
        "Fig. 6.5",
        thesis={
            "model": "L layers of linear attention (eq. 6.4) with layer norm, augmented tokens (0, s_t, s_{t-1})",
            **_THESIS_SETTING,
        },
        ours=_OURS,
        where={"p_softmax": False},
    ),
    Setting(
        "Fig. 6.10",
        thesis={"model": "L layers of softmax attention + MLP with layer norm, augmented tokens", **_THESIS_SETTING},
        ours=_OURS,
        where={"p_softmax": True},
    ),
)


def _adam_steps(rows: pd.DataFrame) -> str | None:
    """Need: each Transformer trained for at least ``_MIN_STEPS`` Adam steps."""
    steps = int((rows["p_epochs"] * (rows["p_n_train"] // rows["p_batch"])).min())
    return None if steps >= _MIN_STEPS else f"{steps} Adam steps < {_MIN_STEPS} (thesis: {_THESIS_STEPS:,})"


def _deviations(rows: pd.DataFrame) -> str:
    """The run's departures from the thesis' setting, in words."""
    out = []
    for column, value in _THESIS.items():
        ours = sorted(rows[column].dropna().unique())
        if ours and any(v != value for v in ours):
            out.append(f"{column[2:]} {'/'.join(f'{v:g}' for v in ours)} (thesis {value:g})")
    steps = sorted(
        {int(e * (n // b)) for e, n, b in rows[["p_epochs", "p_n_train", "p_batch"]].itertuples(index=False)}
    )
    if steps != [_THESIS_STEPS]:
        out.append(f"{'/'.join(f'{s:,}' for s in steps)} Adam steps (thesis {_THESIS_STEPS:,})")
    return "deviations: " + ", ".join(out) if out else ""


def _per_trial(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per trial: depth, final Transformer, GD and least-squares test MSE, log10(Transformer / GD)."""
    reduced = reduce_trials(rows, metrics)
    paired = pairs(reduced, "metric", "test_mse", "gd_mse", on=("trial_key", "p_depth"))
    floor = reduced[reduced["metric"] == "lstsq_mse"][["trial_key", "value"]].rename(columns={"value": "floor"})
    paired = paired.rename(columns={"first": "transformer", "second": "gd"}).merge(floor, on="trial_key")
    return paired.assign(log_ratio=np.log10(paired["transformer"] / paired["gd"]))


def _by_depth(trials: pd.DataFrame, test) -> tuple[bool | str | None, str]:
    """``test(interval)`` at every depth; measured: the paired interval of log10(Transformer / GD) per depth."""
    if trials.empty:
        return None, "no trial recorded both the Transformer's and gradient descent's test MSE"
    verdicts, parts = [], []
    for depth, g in trials.groupby("p_depth"):
        interval = paired_interval(g["log_ratio"], np.zeros(len(g)))
        verdicts.append(test(interval))
        parts.append(
            f"L={int(depth)}: log10(Transformer/GD) {interval.text('+.2f')}, medians Transformer "
            f"{g['transformer'].median():.3g}, GD {g['gd'].median():.3g}, least squares {g['floor'].median():.3g}"
        )
    return all_hold(verdicts), "; ".join(parts)


def _floor_reason(trials: pd.DataFrame) -> str:
    """Why GD cannot be an order of magnitude ahead: the Transformer is within 10x of the least-squares floor."""
    near = trials.groupby("p_depth")[["transformer", "floor"]].median()
    near = near[near["transformer"] < 10 * near["floor"]]
    if near.empty:
        return ""
    depths = ", ".join(str(int(d)) for d in near.index)
    return (
        f"at L = {depths} our Transformer trains to within 10x of the least-squares floor (the error L steps of "
        f"gradient descent approach as L grows), so at this budget gradient descent cannot be ahead of it by an "
        f"order of magnitude"
    )


_CLAIMS = (
    (
        "the first layers, linear attention",
        "Fig. 6.5",
        False,
        lambda d: d <= 2,
        "even though the first Transformer layers are competitive with gradient descent: for L <= 2 the linear-attention "
        "Transformer's test MSE is not an order of magnitude above that of L steps of gradient descent (95% CI of "
        "log10(Transformer / GD) below 1, at every L <= 2)",
        lambda i: i.side("below", 1.0),
    ),
    (
        "L >= 3, linear attention",
        "Fig. 6.5",
        False,
        lambda d: d >= 3,
        "gradient descent outperforms the [linear-attention] Transformer by orders of magnitude when L >= 3 (95% CI of "
        "log10(Transformer / GD) above 1, at every L >= 3)",
        lambda i: i.side("above", 1.0),
    ),
    (
        "softmax + MLP",
        "Fig. 6.10",
        True,
        lambda d: True,
        "a full Transformer with all the bells and whistles (softmax and MLP) outperforms gradient descent (95% CI of "
        "log10(Transformer / GD) below 0, at every L)",
        lambda i: i.side("below"),
    ),
)


def checks(table: pd.DataFrame) -> list[Check]:
    """Linear Transformer vs L steps of GD (Fig. 6.5) and softmax + MLP Transformer vs GD (Fig. 6.10), paired over seeds."""
    ok = table[(table["status"] == "ok") & table["metric"].notna()] if not table.empty else table
    out = []
    for label, figure, softmax, depths, claim, test in _CLAIMS:
        rows = ok[(ok["p_softmax"].astype(bool) == softmax) & ok["p_depth"].map(depths)] if not ok.empty else ok
        rows = rows[rows["metric"].isin(["test_mse", "gd_mse", "lstsq_mse"])] if not rows.empty else rows
        if rows.empty:
            out.append(not_measured(label, claim, "no trial with these depths and this attention", figure=figure))
            continue
        for (backend, device, *_), g in rows.groupby(["backend", "device_name", *_SETUP], dropna=False):
            trials = _per_trial(g)
            note = _deviations(g)
            if "L >= 3" in label:
                note = "; ".join(filter(None, [_floor_reason(trials), note]))
            name = (
                f"{label}, {backend} ({device}), {int(g['p_n_train'].iloc[0]):,} sequences, "
                f"{int(g['p_epochs'].iloc[0]):,} epochs"
            )
            out.append(
                decide(
                    name,
                    claim,
                    g,
                    lambda r, t=trials, test=test: _by_depth(t, test),
                    needs=(seeds(3), _adam_steps),
                    figure=figure,
                    note=note,
                )
            )
    return out


smoke = Params(
    depth=2, dim=3, length=12, n_train=128, n_test=64, epochs=3, lr=5e-3, batch=32, eval_every=1, line_search_n=128
)
