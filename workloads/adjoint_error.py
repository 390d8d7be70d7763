"""adjoint_error: how well a ResNet's backward is recovered without storing activations, vs depth.

Reversing the Euler step, x_n ~ x_{n+1} - h f(x_{n+1}, theta_n), recovers the activations with an
error in O(1/N) (Prop. 2.9) and the gradient with a relative error in O(1/N) (Prop. 2.10); Heun's
reversal does better when the weights are smooth in depth (Prop. 2.11, 2.12). For Momentum
ResNets, reversal by float division by gamma amplifies rounding as depth grows, while the
information buffer (``momentum_reversible``) reverses exactly (section 4.3.1). With ``train: true``
a trial trains the small classifier of section 2.5.2 (on scikit-learn's digits, or CIFAR-10 / MNIST
when on disk) by backprop or by the adjoint backward instead, with appendix 2.B.1's recipe, and
records its test accuracy after every epoch (Fig. 2.4 plots the best).

References: thesis section 2.4, Prop. 2.9-2.12, Fig. 2.3c; section 2.5.2, Fig. 2.4, appendix
2.B.1; eq. 2.1, 2.6-2.9, 4.2-4.3.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
import pandas as pd
import pydantic

from backends import Backend
from backends.datasets import DATASETS, DatasetUnavailable, load_images
from backends.init import normal
from backends.residual_classifier_init import ClassifierConfig, cosine_lr
from backends.residual_config import init_params, make_config
from harness.checks import Check, all_hold, at_least, decide, distinct, paired_interval, seeds, span
from harness.figures import Figure, Setting
from harness.training import passes
from harness.workload import DEFAULT, Context, Float, Metric, OnlyIf, Record, Skip
from harness.workload import Params as _Params
from results.aggregate import reduce_trials

name = "adjoint_error"
version = 3
backends = ("torch", "jax")
metrics = (
    Metric(
        "recon_err",
        "1",
        "lower",
        "median",
        "max over layers n of ||x_n - x~_n|| / ||x_n||, x~ recovered from the output by the model's reversal",
    ),
    Metric(
        "grad_rel_err",
        "1",
        "lower",
        "median",
        "||g_adj - g_bp|| / ||g_bp|| per parameter tensor (tag; 'input' for x_0), g_bp by backprop; with train: "
        "true, of the trained net's residual blocks on 256 training images",
    ),
    Metric(
        "grad_mse_ratio",
        "1",
        "lower",
        "median",
        "mean((g_bp - g_adj)^2) / mean(g_bp^2) per parameter tensor (tag): the measure of Fig. 2.3c; with train: "
        "true, of the trained net's residual blocks on 256 training images",
    ),
    Metric(
        "test_acc",
        "1",
        "higher",
        "max",
        "train: true only; test accuracy after each epoch (step); a trial's value is the best (Fig. 2.4)",
    ),
    Metric("train_loss", "1", "lower", "last", "train: true only; mean training cross-entropy of each epoch (step)"),
)

MODELS = {
    "euler": "adjoint_euler",
    "heun": "adjoint_heun",
    "momentum": "momentum",
    "momentum_reversible": "momentum_reversible",
}
"""scheme -> residual model: euler and heun reverse their step (section 2.4); momentum reverses by
float division by gamma (no buffer), momentum_reversible with the information buffer (exact)."""
_ADJOINT = ("euler", "heun")
_MOMENTUM = ("momentum", "momentum_reversible")
_EPS = {"float32": float(np.finfo(np.float32).eps), "float64": float(np.finfo(np.float64).eps)}
_GRAD_BATCH = 256
"""Training images on which a trained net's adjoint gradient is compared with backprop's (the authors' batch)."""
_COARSE = 4
"""Layers of the coarse net whose weights are interpolated in depth for ``init='smooth'``."""


_TRAIN_DEFAULTS = {"batch": 128, "activation": "relu", "dtype": "float32"}
"""A training trial's defaults: appendix 2.B.1's recipe (SGD, momentum 0.9, weight decay 5e-4, cosine
schedule from lr 0.1, batch 128, 200 epochs, the train-only fields' fills); the data is digits unless
CIFAR-10 is on disk."""
_IF_ERRORS = OnlyIf(train=[False])
"""Fields of the error measurements, null in a training trial."""
_IF_ERRORS_FILL = OnlyIf(train=[False], fill=DEFAULT)
"""The same, where null (e.g. from a stored row) means the default."""


def _if_train(fill: object) -> OnlyIf:
    """A training trial's field, null elsewhere; ``fill`` where a training trial leaves it null."""
    return OnlyIf(train=[True], fill=fill)


class Params(_Params):
    """One network: reversal scheme, depth, width, batch, initialisation, block, numerics; or a training run."""

    scheme: Literal[tuple(MODELS)] = pydantic.Field(  # type: ignore[valid-type]
        "euler",
        description="euler | heun (the adjoint's reversal, section 2.4); momentum (float division by "
        "gamma) | momentum_reversible (information buffer); train: euler | heun only",
    )
    depth: pydantic.PositiveInt = pydantic.Field(64, le=65536, description="N: number of residual layers")
    width: pydantic.PositiveInt = pydantic.Field(16, description="d: features, or channels of a conv block")
    hidden: Annotated[pydantic.PositiveInt | None, _IF_ERRORS] = pydantic.Field(
        None, description="hidden width of f; None: width"
    )
    batch: pydantic.PositiveInt = 8
    init: Annotated[Literal["tied", "smooth", "iid", "zero"] | None, _IF_ERRORS_FILL] = pydantic.Field(
        "tied",
        description="tied: one set for every layer; smooth: linearly interpolated in depth from a "
        f"{_COARSE}-layer net (2.5.2); iid: independent per layer; zero: last layer of f "
        "zero, so f = 0 and the reversal is exact",
    )
    activation: Literal["tanh", "relu", "gelu"] = "tanh"
    block: Annotated[Literal["mlp", "conv", "conv_norm"] | None, _IF_ERRORS_FILL] = pydantic.Field(
        "mlp",
        description="mlp; conv: pre-activation basic block; conv_norm: the same ending in a zero-initialised norm",
    )
    image_size: Annotated[pydantic.PositiveInt | None, OnlyIf(train=[False], block=["conv", "conv_norm"], fill=8)] = (
        pydantic.Field(None, description="side of the images (conv: 8)")
    )
    scale: Annotated[Float | None, _IF_ERRORS] = pydantic.Field(
        None, gt=0.0, description="step h; None: 1/depth (adjoint), 1 (momentum)"
    )
    gamma: Annotated[Float | None, OnlyIf(train=[False], scheme=_MOMENTUM)] = pydantic.Field(
        None, gt=0.0, le=1.0, description="momentum term (momentum models); None: 1 - 1/(50 depth)"
    )
    dtype: Literal["float32", "float64"] = "float64"
    train: bool = pydantic.Field(
        False,
        description="train the section 2.5.2 classifier on digits (Fig. 2.4) "
        "instead of measuring reconstruction and gradient errors",
    )
    backward: Annotated[Literal["adjoint", "backprop"] | None, _if_train("adjoint")] = pydantic.Field(
        None, description="train only: gradient of the residual part by the adjoint or by backprop"
    )
    epochs: Annotated[pydantic.PositiveInt | None, _if_train(200)] = pydantic.Field(
        None, description="train only (default 200)"
    )
    lr: Annotated[Float | None, _if_train(0.1)] = pydantic.Field(
        None, gt=0.0, description="train only: initial learning rate, cosine-annealed (default 0.1)"
    )
    data: Annotated[Literal[tuple(DATASETS)] | None, _if_train("digits")] = pydantic.Field(  # type: ignore[valid-type]
        None, description="train only: digits (default) | cifar10 (the thesis' data) | mnist, read from disk"
    )

    @pydantic.model_validator(mode="before")
    @classmethod
    def _train_recipe(cls, data: dict) -> dict:
        if not isinstance(data, dict):
            return data
        try:
            train = pydantic.TypeAdapter(bool).validate_python(data.get("train", False))
        except pydantic.ValidationError:
            return data  # the train field reports the bad value
        return {**data, **{k: v for k, v in _TRAIN_DEFAULTS.items() if data.get(k) is None}} if train else data

    @pydantic.model_validator(mode="after")
    def _train_schemes(self) -> Params:
        if self.train and self.scheme not in _ADJOINT:
            raise ValueError(f"scheme={self.scheme!r} with train: true; allowed: {', '.join(_ADJOINT)}")
        return self


def smooth_weights(
    sets: int,
    *,
    width: int,
    hidden: int | None,
    block: str,
    activation: str,
    dtype: str,
    seed: int,
    coarse: int = _COARSE,
) -> dict[str, np.ndarray]:
    """Weights linearly interpolated in depth from a ``coarse``-layer net (thesis section 2.5.2).

    Args:
        sets: parameter sets wanted (N, or N + 1 for Heun).
        width, hidden, block, activation, dtype, seed: as ``residual_net``.
        coarse: layers of the net drawn i.i.d. and interpolated.

    Returns:
        name -> array (sets, *shape) of ``dtype``, Lipschitz in the layer index with constant O(1/N).
    """
    cfg = make_config(
        "resnet", depth=coarse, width=width, hidden=hidden, block=block, activation=activation, dtype=dtype
    )
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
    kwargs = dict(
        depth=params.depth,
        width=params.width,
        hidden=params.hidden,
        block=params.block,
        activation=params.activation,
        tied=params.init == "tied",
        gamma=params.gamma,
        scale=params.scale,
        seed=seed,
        dtype=params.dtype,
        device=device,
    )
    if params.block != "mlp":
        kwargs["image_size"] = params.image_size
    sets = params.depth + 1 if params.scheme == "heun" else params.depth
    if params.init == "smooth":
        kwargs["weights"] = smooth_weights(
            sets,
            width=params.width,
            hidden=params.hidden,
            block=params.block,
            activation=params.activation,
            dtype=params.dtype,
            seed=seed,
        )
    elif params.init == "zero":
        hidden = params.hidden or params.width
        last = (
            {"w2": (params.width, hidden), "b2": (params.width,)}
            if params.block == "mlp"
            else {"conv2.weight": (params.width, hidden, 3, 3)}
        )
        kwargs["weights"] = {k: np.zeros((sets, *shape)) for k, shape in last.items()}
    return kwargs


def run(params: Params, backend: Backend, ctx: Context) -> list[Record]:
    """Errors of the model's reversal (or, with ``train``, a training run on digits)."""
    return (_train if params.train else _errors)(params, backend, ctx)


def _train(params: Params, backend: Backend, ctx: Context) -> list[Record]:
    """Train the section 2.5.2 classifier with the adjoint or backprop; test accuracy and training loss per epoch."""
    try:
        data = load_images(params.data)
    except DatasetUnavailable as missing:
        raise Skip(str(missing)) from missing
    config = ClassifierConfig(
        scheme=params.scheme,
        backward=params.backward,
        depth=params.depth,
        width=params.width,
        activation=params.activation,
        in_channels=data.channels,
        image_size=data.image_size,
        classes=data.num_classes,
        dtype=params.dtype,
        unroll=ctx.device == "cpu",
    )
    device, ops = backend.device(ctx.device), backend.ops
    x = backend.asarray(data.train_x, device, params.dtype)
    y = backend.asarray(data.train_y, device)
    trainer = ops.residual_classifier_trainer(config, ops.residual_classifier_init(config, ctx.seed, device))
    trainer.compile(x, y, params.batch)
    rng = np.random.default_rng(np.random.SeedSequence([ctx.seed, 11]))
    test_x = backend.asarray(data.test_x, device, params.dtype)
    records = []
    orders = ((epoch, rng.permutation(len(data.train_y))) for epoch in range(1, params.epochs + 1))

    def fit(epoch: int, order: np.ndarray) -> tuple[float, float]:
        return trainer.fit_epoch(x, y, order, params.batch, cosine_lr(params.lr, epoch - 1, params.epochs))

    for done in passes(backend, ctx.device, fit, orders, lr=params.lr):
        accuracy = float(np.mean(trainer.predict(test_x) == data.test_y))
        records += [Record("train_loss", done.loss, step=done.step), Record("test_acc", accuracy, step=done.step)]
    batch = np.sort(rng.permutation(len(data.train_y))[:_GRAD_BATCH])
    true = trainer.body_gradients(x[batch], y[batch], "backprop")
    adjoint = trainer.body_gradients(x[batch], y[batch], "adjoint")
    return records + _gradient_records(adjoint, true)


def _gradient_records(mine: dict[str, np.ndarray], theirs: dict[str, np.ndarray]) -> list[Record]:
    """grad_rel_err and grad_mse_ratio of ``mine`` against ``theirs`` (backprop's), one record per tensor (tag)."""
    records = []
    for key, b in theirs.items():
        a = np.asarray(mine[key], np.float64)
        b = np.asarray(b, np.float64)
        nb, err = float(np.linalg.norm(b)), float(np.linalg.norm(a - b))
        msb, mse = float(np.mean(b**2)), float(np.mean((a - b) ** 2))
        records += [
            Record("grad_rel_err", err / nb if nb else err, tag=key),
            Record("grad_mse_ratio", mse / msb if msb else mse, tag=key),
        ]
    return records


def _errors(params: Params, backend: Backend, ctx: Context) -> list[Record]:
    """Reconstruct every activation from the output; for adjoint models compare gradients with backprop."""
    device = backend.device(ctx.device)
    kwargs = _net_kwargs(params, ctx.seed, device)
    model = MODELS[params.scheme]
    try:
        net = backend.ops.residual_net(model, **kwargs)
    except ValueError as exc:
        raise Skip(str(exc)) from exc
    shape = (
        (params.batch, params.width)
        if params.block == "mlp"
        else (params.batch, params.width, params.image_size, params.image_size)
    )
    x = backend.asarray(normal(ctx.seed + 1, shape), device, params.dtype)
    seen = backend.to_numpy(backend.ops.residual_trajectory(net, x)).astype(np.float64)
    back = backend.to_numpy(backend.ops.residual_reconstruct(net, x)).astype(np.float64)
    axes = tuple(range(1, seen.ndim))
    rel = np.sqrt(((seen - back) ** 2).sum(axis=axes)) / np.sqrt((seen**2).sum(axis=axes))
    records = [Record("recon_err", float(np.max(rel)))]
    if params.scheme in _ADJOINT:
        g = backend.asarray(normal(ctx.seed + 2, shape), device, params.dtype)
        ref = backend.ops.residual_net(model, backprop=True, **kwargs)
        mine, theirs = backend.ops.residual_vjp(net, x, g), backend.ops.residual_vjp(ref, x, g)
        records += _gradient_records(
            {k: backend.to_numpy(v) for k, v in mine.items()}, {k: backend.to_numpy(v) for k, v in theirs.items()}
        )
    return records


def fitted_slope(depths: np.ndarray, errors: np.ndarray, floor: float) -> tuple[float | None, int]:
    """Least-squares slope of log(error) vs log(depth) over the points above ``floor``.

    Returns:
        (slope or None when fewer than two points are above the floor, points used).
    """
    keep = np.asarray(errors) > floor
    if keep.sum() < 2:
        return None, int(keep.sum())
    return float(np.polyfit(np.log(np.asarray(depths)[keep]), np.log(np.asarray(errors)[keep]), 1)[0]), int(keep.sum())


_ERRORS = {"p_train": False}
_TRAINED = {"p_train": True}
figures = (
    Figure(
        "Relative gradient error of the adjoint per parameter tensor vs depth, ResNet (Euler) vs HeunNet",
        "grad_mse_ratio",
        "p_depth",
        thesis="Fig. 2.3c",
        series=("p_scheme", "tag"),
        facet="p_init",
        where=_ERRORS | {"p_scheme": _ADJOINT, "p_dtype": "float64"},
        log_x=True,
        log_y=True,
        x_title="depth N",
        y_title="mean (g_adj - g_bp)^2 / mean g_bp^2",
    ),
    Figure(
        "Relative gradient error of the adjoint per residual-block tensor of the trained classifier vs depth",
        "grad_mse_ratio",
        "p_depth",
        thesis="Fig. 2.3c",
        series=("p_scheme", "tag"),
        facet="p_backward",
        where=_TRAINED,
        log_x=True,
        log_y=True,
        x_title="depth N (trained at N)",
        y_title="mean (g_adj - g_bp)^2 / mean g_bp^2",
    ),
    Figure(
        "Reconstruction error of the reversal vs depth (Prop. 2.9: O(1/N); Prop. 2.11: O(1/N^2) with smooth weights)",
        "recon_err",
        "p_depth",
        series=("p_scheme", "p_dtype"),
        facet="p_init",
        where=_ERRORS | {"p_scheme": _ADJOINT},
        log_x=True,
        log_y=True,
        x_title="depth N",
        y_title="max_n ||x_n - x~_n|| / ||x_n||",
    ),
    Figure(
        "Gradient relative error of the adjoint vs depth (Prop. 2.10: O(1/N); Prop. 2.12: O(1/N^2) with smooth weights)",
        "grad_rel_err",
        "p_depth",
        series=("p_scheme", "tag"),
        facet="p_init",
        where=_ERRORS | {"p_scheme": _ADJOINT, "p_dtype": "float64"},
        log_x=True,
        log_y=True,
        x_title="depth N",
        y_title="||g_adj - g_bp|| / ||g_bp||",
    ),
    Figure(
        "Momentum ResNet reversed by division by gamma vs with the information buffer (exactly 0, off the log axis)",
        "recon_err",
        "p_depth",
        series=("p_scheme", "p_gamma", "p_dtype"),
        facet="p_init",
        where=_ERRORS | {"p_scheme": ("momentum", "momentum_reversible")},
        log_x=True,
        log_y=True,
        x_title="depth N",
        y_title="max_n ||x_n - x~_n|| / ||x_n||",
    ),
    Figure(
        "Best test accuracy vs depth, ResNet (Euler) and HeunNet trained by backprop or by the adjoint",
        "test_acc",
        "p_depth",
        thesis="Fig. 2.4",
        series=("p_scheme", "p_backward"),
        where=_TRAINED,
        log_x=True,
        x_title="depth N",
        y_title="best test accuracy",
    ),
    Figure(
        "Test accuracy per epoch, per depth",
        "test_acc",
        "step",
        series=("p_scheme", "p_backward"),
        facet="p_depth",
        where=_TRAINED,
        by_step=True,
        x_title="epoch",
        y_title="test accuracy",
    ),
    Figure(
        "Training loss per epoch, per depth",
        "train_loss",
        "step",
        series=("p_scheme", "p_backward"),
        facet="p_depth",
        where=_TRAINED,
        by_step=True,
        log_y=True,
        x_title="epoch",
        y_title="cross-entropy",
    ),
)

settings = (
    Setting(
        "Fig. 2.3c",
        thesis={
            "model": "the Fig. 2.4 classifier trained on CIFAR-10 at depth 32, its blocks copied to depth N",
            "weights": "trained (smooth in depth after transfer)",
            "data": "one CIFAR-10 batch of 256",
            "measure": "mean squared gradient error / mean squared gradient, per weight tensor",
            "dtype": "float32",
            "device": "NVIDIA V100",
        },
        ours={
            "trained (else random)": "p_train",
            "block (random nets)": "p_block",
            "width": "p_width",
            "weights (random nets)": "p_init",
            "data (trained nets)": "p_data",
            "depths": "p_depth",
            "dtype": "p_dtype",
            "seeds": "seed",
            "device": "device_name",
        },
    ),
    Setting(
        "Fig. 2.4",
        thesis={
            "model": "5x5 conv to 16 channels (down-sampled to 10x10), BN, ReLU, N pre-activation basic "
            "blocks with zero-initialised last BN, h = 1/N",
            "data": "CIFAR-10",
            "optimiser": "SGD, momentum 0.9, weight decay 5e-4, cosine schedule",
            "lr": "0.1",
            "batch": "128",
            "epochs": "200",
            "depths": "2, 4, 8, 16, 32, 64",
            "seeds": "5 (median; the authors' plot script reads 4)",
            "device": "NVIDIA V100",
        },
        ours={
            "data": "p_data",
            "width": "p_width",
            "lr": "p_lr",
            "batch": "p_batch",
            "epochs": "p_epochs",
            "depths": "p_depth",
            "dtype": "p_dtype",
            "seeds": "seed",
            "device": "device_name",
        },
        where=_TRAINED,
    ),
)

_CONFIG = ["p_init", "p_activation", "p_block", "p_width", "p_hidden", "p_batch", "p_image_size", "p_scale", "p_dtype"]
"""The error grid's checks: one per value of these columns, backends pooled (each must bear the claim out)."""
_TRAIN_CONFIG = ["p_data", "p_activation", "p_width", "p_batch", "p_epochs", "p_lr", "p_dtype"]
"""The training checks: one per value of these columns, backends pooled (pairs are formed within a backend)."""
_EQ = {"recon_err": "2.6", "grad_rel_err": "2.6, 2.7"}
_FLOOR = 100 * _EPS["float64"]
"""Errors below 100 float64 epsilons are rounding: left out of the fitted slopes."""
_SMOOTH = ("tied", "smooth")
"""Weights with Delta_theta = O(1/N), the assumption under which Heun gains an order (Prop. 2.11, 2.12)."""
_CLOSE = 0.01
"""Accuracy difference (1 point) within which two trainings count as the same."""
_FIG24 = {"p_data": ("data", "cifar10"), "p_epochs": ("epochs", 200), "p_lr": ("lr", 0.1), "p_batch": ("batch", 128)}
"""Appendix 2.B.1's setting of Fig. 2.4; a training check's note lists where the run departs from it."""
_MIN_EPOCHS = 20
"""Fewest epochs at which a trained comparison is decided (thesis: 200 CIFAR-10 epochs)."""
_SLOPE_NEEDS = (span("p_depth", 8, "depths"), distinct("p_depth", 3, "depths"))
_TRAIN_NEEDS = (seeds(3), at_least("p_epochs", _MIN_EPOCHS, "epochs"))


def _trials(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One value per trial (and tag) of ``metric``, reduced as declared, with the trial's seed."""
    rows = reduce_trials(table, metrics)
    rows = rows[rows["metric"] == metric]
    seed = table.drop_duplicates("trial_key").set_index("trial_key")["seed"]
    return rows.assign(seed=rows["trial_key"].map(seed))


def _groups(rows: pd.DataFrame, columns: list[str]):
    """(label, rows) per configuration; null parameters read as "-"."""
    keys = [c for c in columns if c in rows]
    filled = rows.assign(**{c: rows[c].astype(object).where(rows[c].notna(), "-") for c in keys})
    for key, group in filled.groupby(keys, sort=False):
        d = dict(zip(keys, key))
        yield d, rows.loc[group.index]


def _text(value: object) -> str:
    """A parameter value as a label shows it: 20, not 20.0 (a column with nulls holds floats)."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def _label(d: dict) -> str:
    return ", ".join(f"{k.removeprefix('p_')}={_text(v)}" for k, v in d.items() if v != "-")


def _is_weight(tag: object) -> bool:
    """A weight tensor (the authors leave biases and the input out of Fig. 2.3c)."""
    return isinstance(tag, str) and tag != "input" and tag not in ("b1", "b2") and not tag.endswith(".bias")


def _slopes(rows: pd.DataFrame, scheme: str) -> dict[str, tuple[float | None, int]]:
    """backend -> fitted slope of the per-depth median (over seeds) of each trial's max over tensors."""
    rows = rows[rows["p_scheme"] == scheme]
    per_trial = rows.groupby(["backend", "trial_key", "p_depth"], as_index=False)["value"].max()
    out = {}
    for backend, g in per_trial.groupby("backend"):
        curve = g.groupby("p_depth")["value"].median()
        out[backend] = fitted_slope(curve.index.to_numpy(float), curve.to_numpy(float), _FLOOR)
    return out


def _rate_test(scheme: str, bound: float):
    """Test: every backend's fitted slope of ``scheme`` is at most ``bound`` (the error falls at least that fast)."""

    def test(rows: pd.DataFrame) -> tuple[bool | None, str]:
        slopes = _slopes(rows, scheme)
        fitted = [s for s, _ in slopes.values() if s is not None]
        text = "; ".join(
            f"{b}: slope {s:.2f} over {n} depths"
            if s is not None
            else f"{b}: n/a ({n} depth(s) above 100 float64 epsilons)"
            for b, (s, n) in slopes.items()
        )
        return (all(s <= bound for s in fitted) if fitted else None), text or f"no {scheme} trial"

    return test


def _rate_checks(table: pd.DataFrame) -> list[Check]:
    """Prop. 2.9-2.12: reconstruction and gradient errors of the Euler and Heun reversals fall at their rates."""
    out = []
    for metric, what, props in (
        ("recon_err", "reconstruction error", ("Prop. 2.9", "Prop. 2.11")),
        ("grad_rel_err", "gradient relative error", ("Prop. 2.10", "Prop. 2.12")),
    ):
        rows = _trials(table, metric)
        rows = rows[(rows["p_train"] == False) & (rows["p_dtype"] == "float64") & rows["p_scheme"].isin(_ADJOINT)]  # noqa: E712
        for d, g in _groups(rows, _CONFIG):
            label = _label(d)
            out.append(
                decide(
                    f"Euler {what} falls like 1/N: {label}",
                    f"the {what} of the adjoint's Euler reversal (eq. {_EQ[metric]}) "
                    "is O(1/N): fitted log-log slope at most -0.7",
                    g,
                    _rate_test("euler", -0.7),
                    needs=_SLOPE_NEEDS,
                    figure=props[0],
                    note="random untrained residual MLPs, not a trained network",
                )
            )
            if d["p_init"] in _SMOOTH:
                out.append(
                    decide(
                        f"Heun {what} falls like 1/N^2 with smooth weights: {label}",
                        f"with weights smooth in depth (Delta_theta = O(1/N)) the {what} of Heun's reversal "
                        "(eq. 2.9) is O(1/N^2): fitted log-log slope at most -1.7",
                        g,
                        _rate_test("heun", -1.7),
                        needs=_SLOPE_NEEDS,
                        figure=props[1],
                        note="random untrained residual MLPs, not a trained network",
                    )
                )
    return out


def _keys(rows: pd.DataFrame) -> list[str]:
    """What a gradient comparison pairs on besides the scheme: trained nets also by how they were trained."""
    return ["backend", "seed", "p_depth", "tag"] + (["p_backward"] if rows["p_backward"].notna().any() else [])


def _heun_better(rows: pd.DataFrame) -> tuple[bool | str | None, str]:
    """log10 of Heun's over Euler's error per weight tensor, paired; holds when the 95% interval is below 0."""
    rows = rows[rows["tag"].map(_is_weight)].assign(value=lambda r: np.log10(np.maximum(r["value"], 1e-300)))
    on = _keys(rows)
    heun = rows[rows["p_scheme"] == "heun"][on + ["value"]]
    both = heun.merge(rows[rows["p_scheme"] == "euler"][on + ["value"]], on=on, suffixes=("_heun", "_euler"))
    if both.empty:
        return None, "no depth with both the ResNet and the HeunNet"
    interval = paired_interval(both["value_heun"], both["value_euler"])
    return interval.side("below"), f"log10(Heun / Euler) of the error ratio: {interval.text('+.2f')}"


def _deeper_better(rows: pd.DataFrame) -> tuple[bool | None, str]:
    """Each weight tensor's median error over seeds falls with depth (slope < 0), above the dtype's rounding."""
    rows = rows[rows["tag"].map(_is_weight)]
    floor = (100 * _EPS[rows["p_dtype"].iloc[0]]) ** 2 if len(rows) else 0.0  # a squared ratio
    lines = [c for c in _keys(rows) if c not in ("seed", "p_depth")] + ["p_scheme"]
    curves = rows.groupby(lines + ["p_depth"])["value"].median().reset_index()
    slopes = {}
    for key, g in curves.groupby(lines):
        slope, _ = fitted_slope(g["p_depth"].to_numpy(float), g["value"].to_numpy(float), floor)
        if slope is not None:
            slopes[" ".join(map(str, key))] = slope
    if not slopes:
        return None, "fewer than two depths above (100 epsilons)^2"
    worst = max(slopes, key=slopes.get)
    return all(s < 0 for s in slopes.values()), (
        f"{len(slopes)} curves, slopes {min(slopes.values()):.2f} to {slopes[worst]:.2f} ({worst})"
    )


def _gradient_checks(table: pd.DataFrame) -> list[Check]:
    """Fig. 2.3c: the adjoint's gradients approach backprop's as depth grows, and the HeunNet's faster."""
    rows = _trials(table, "grad_mse_ratio")
    random = rows[(rows["p_train"] == False) & (rows["p_dtype"] == "float64")]  # noqa: E712
    trained = rows[rows["p_train"] == True]  # noqa: E712
    note = (
        "random untrained residual networks (weights as p_init), not the thesis' CIFAR-10 network trained at depth 32"
    )
    groups = [(d, g, note) for d, g in _groups(random, _CONFIG)]
    groups += [
        (
            d | {"p_init": "trained"},
            g,
            "; ".join(
                filter(
                    None,
                    [
                        "trained at depth N on the data (the thesis: trained at depth 32, blocks copied to depth N)",
                        _fig24_note(d),
                    ],
                )
            ),
        )
        for d, g in _groups(trained, _TRAIN_CONFIG)
    ]
    out = []
    for d, g, why in groups:
        label = _label({k: v for k, v in d.items() if k != "p_init" or v != "trained"})
        label = f"trained, {label}" if d["p_init"] == "trained" else label
        out.append(
            decide(
                f"deeper is better for the adjoint's gradients: {label}",
                "the deeper the architecture, the better the approximation on the gradients: each weight "
                "tensor's relative error falls with depth (fitted log-log slope < 0), ResNet and HeunNet",
                g,
                _deeper_better,
                needs=_SLOPE_NEEDS,
                figure="Fig. 2.3c",
                note=why,
            )
        )
        if d["p_init"] in _SMOOTH + ("trained",):
            out.append(
                decide(
                    f"HeunNet approximates the gradient better than the ResNet: {label}",
                    "the HeunNet approximates the true gradient better than the ResNet: log10 of Heun's over "
                    "Euler's relative error per weight tensor, paired on seed, depth and tensor, has its "
                    "95% interval below 0",
                    g,
                    _heun_better,
                    needs=(seeds(3), distinct("p_depth", 2, "depths")),
                    figure="Fig. 2.3c",
                    note=why,
                )
            )
    return out


def _exact(rows: pd.DataFrame) -> tuple[bool | None, str]:
    return bool((rows["value"] == 0).all()), f"max recon_err {rows['value'].max():.3g}"


def _momentum_checks(table: pd.DataFrame) -> list[Check]:
    """Section 4.3.1: the information buffer reverses exactly; division by gamma amplifies rounding with depth."""
    rows = _trials(table, "recon_err")
    rows = rows[rows["p_train"] == False]  # noqa: E712
    out = []
    for d, g in _groups(rows[rows["p_scheme"] == "momentum_reversible"], _CONFIG + ["p_gamma"]):
        out.append(
            decide(
                f"buffer reverses exactly: {_label(d)}",
                "with the information buffer the Momentum ResNet's activations are recovered exactly, at every depth",
                g,
                _exact,
                needs=(span("p_depth", 8, "depths"),),
                figure="section 4.3.1",
            )
        )
    for d, g in _groups(rows[rows["p_scheme"] == "momentum"], _CONFIG + ["p_gamma"]):

        def grows(r: pd.DataFrame) -> tuple[bool | None, str]:
            curve = r.groupby("p_depth")["value"].median()
            return (
                bool(curve.iloc[-1] > curve.iloc[0]),
                f"N={curve.index[0]}: {curve.iloc[0]:.3g}; N={curve.index[-1]}: {curve.iloc[-1]:.3g}",
            )

        out.append(
            decide(
                f"division by gamma amplifies rounding: {_label(d)}",
                "without the buffer, reversing by float division by gamma loses bits at every layer: the "
                "reconstruction error grows with depth",
                g,
                grows,
                needs=(span("p_depth", 8, "depths"),),
                figure="section 4.3.1",
            )
        )
    return out


def _best(rows: pd.DataFrame, scheme: object, backward: object, on: list[str]) -> pd.DataFrame:
    pick = rows
    if scheme is not None:
        pick = pick[pick["p_scheme"] == scheme]
    if backward is not None:
        pick = pick[pick["p_backward"] == backward]
    return pick[on + ["value"]]


def _paired(rows: pd.DataFrame, first: dict, second: dict, on: list[str]):
    """Paired interval of best accuracies, ``first - second`` (each a dict of p_scheme / p_backward), or None."""
    a = _best(rows, first.get("p_scheme"), first.get("p_backward"), on)
    b = _best(rows, second.get("p_scheme"), second.get("p_backward"), on)
    both = a.merge(b, on=on, suffixes=("_a", "_b"))
    return paired_interval(both["value_a"], both["value_b"]) if not both.empty else None


def _gap_at(which: str):
    """Test of backprop minus adjoint accuracy at the smallest (large gap) or the largest depth (no gap)."""

    def test(rows: pd.DataFrame) -> tuple[bool | str | None, str]:
        depth = rows["p_depth"].min() if which == "smallest" else rows["p_depth"].max()
        interval = _paired(
            rows[rows["p_depth"] == depth],
            {"p_backward": "backprop"},
            {"p_backward": "adjoint"},
            ["backend", "p_scheme", "seed"],
        )
        if interval is None:
            return None, f"N={depth}: no seed trained both ways"
        holds = interval.side("above") if which == "smallest" else interval.side("below", _CLOSE)
        return holds, f"N={depth}: backprop - adjoint accuracy {interval.text('+.3f')}"

    return test


def _compare(first: dict, second: dict, side: str):
    """Test over every depth: ``first - second`` accuracy within +-1 point (same) or above -1 point (no worse)."""

    def test(rows: pd.DataFrame) -> tuple[bool | str | None, str]:
        interval = _paired(rows, first, second, ["backend", "p_depth", "seed"])
        if interval is None:
            return None, "no depth and seed with both"
        sides = [interval.side("above", -_CLOSE)] + ([] if side == "no worse" else [interval.side("below", _CLOSE)])
        holds = all_hold(sides)
        return holds, f"difference {interval.text('+.3f')} over (depth, seed) pairs"

    return test


def _fig24_note(d: dict) -> str:
    """Where a training configuration departs from appendix 2.B.1's setting."""
    return "; ".join(
        f"{what} {_text(d[key])} (thesis {value})"
        for key, (what, value) in _FIG24.items()
        if d.get(key, "-") not in (value, "-")
    )


def _train_checks(table: pd.DataFrame) -> list[Check]:
    """Fig. 2.4, paired over seeds: the adjoint costs accuracy at small depth, not at large; Heun's adjoint is no worse."""
    rows = _trials(table, "test_acc")
    rows = rows[rows["p_train"] == True]  # noqa: E712
    out = []
    for d, g in _groups(rows, _TRAIN_CONFIG):
        label = _label(d)
        note = _fig24_note(d)
        out.append(
            decide(
                f"adjoint falls short at small depth: {label}",
                "approximated gradients lead to a large test error at small depth: at the smallest depth, "
                "backprop's best test accuracy minus the adjoint's (paired on seed) has its 95% interval above 0",
                g,
                _gap_at("smallest"),
                needs=_TRAIN_NEEDS + (distinct("p_depth", 2, "depths"),),
                figure="Fig. 2.4",
                note=note,
            )
        )
        out.append(
            decide(
                f"adjoint matches backprop at large depth: {label}",
                "approximated gradients give the same performance at large depth: at the largest depth, "
                f"backprop's accuracy minus the adjoint's has its 95% interval below {_CLOSE:.0%}",
                g,
                _gap_at("largest"),
                needs=_TRAIN_NEEDS + (span("p_depth", 8, "depths"),),
                figure="Fig. 2.4",
                note=note,
            )
        )
        out.append(
            decide(
                f"backprop gives the same curves for ResNet and HeunNet: {label}",
                "the true backpropagation gives the same curves for the ResNet and the HeunNet: HeunNet minus "
                f"ResNet accuracy, paired on depth and seed, has its 95% interval within +-{_CLOSE:.0%}",
                g,
                _compare(
                    {"p_scheme": "heun", "p_backward": "backprop"},
                    {"p_scheme": "euler", "p_backward": "backprop"},
                    "same",
                ),
                needs=_TRAIN_NEEDS,
                figure="Fig. 2.4",
                note=note,
            )
        )
        out.append(
            decide(
                f"HeunNet trained by the adjoint no worse than the ResNet: {label}",
                "at fixed depth, the accuracy when training a HeunNet with the adjoint method is better (or "
                "similar) than for the ResNet with the adjoint method: HeunNet minus ResNet accuracy, paired "
                f"on depth and seed, has its 95% interval above -{_CLOSE:.0%}",
                g,
                _compare(
                    {"p_scheme": "heun", "p_backward": "adjoint"},
                    {"p_scheme": "euler", "p_backward": "adjoint"},
                    "no worse",
                ),
                needs=_TRAIN_NEEDS,
                figure="Fig. 2.4 (Prop. 2.10 vs 2.12)",
                note=note,
            )
        )
    return out


def checks(table: pd.DataFrame) -> list[Check]:
    """Prop. 2.9-2.12 (rates, float64), Fig. 2.3c (gradients vs depth), section 4.3.1 (momentum), Fig. 2.4 (training)."""
    if "p_train" not in table or table.empty:
        return []
    return _rate_checks(table) + _gradient_checks(table) + _momentum_checks(table) + _train_checks(table)


smoke = Params(scheme="heun", depth=16, width=8, batch=4, init="tied", dtype="float64")
