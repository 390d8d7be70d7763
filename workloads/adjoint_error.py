"""adjoint_error: how well a ResNet's backward is recovered without storing activations, vs depth.

Reversing the Euler step, x_n ~ x_{n+1} - h f(x_{n+1}, theta_n), recovers the activations with an
error in O(1/N) (Prop. 2.9) and the gradient with a relative error in O(1/N) (Prop. 2.10); Heun's
reversal does better when the weights are smooth in depth (Prop. 2.11, 2.12). For Momentum
ResNets, reversal by float division by gamma amplifies rounding as depth grows, while the
information buffer (``momentum_reversible``) reverses exactly (section 4.3.1). With ``train: true``
a trial trains the small classifier of section 2.5.2 (on scikit-learn's digits, or CIFAR-10 / MNIST
when on disk) by backprop or by the adjoint backward instead, with appendix 2.B.1's recipe, and
records its test accuracy after every epoch (Fig. 2.4 plots the best).

The checks live in ``_adjoint_error_checks``, the figures and thesis settings in
``_adjoint_error_figures``; this module re-exports them.

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
from backends.residual_classifier import ClassifierConfig, cosine_lr
from backends.resnets import init_params, make_config
from core.checks import Check
from core.training import passes
from core.workload import DEFAULT, Context, Float, Metric, OnlyIf, Record, Skip
from core.workload import Params as _Params
from workloads._adjoint_error_checks import ADJOINT as _ADJOINT
from workloads._adjoint_error_checks import adjoint_checks
from workloads._adjoint_error_checks import fitted_slope as fitted_slope
from workloads._adjoint_error_figures import figures as figures
from workloads._adjoint_error_figures import settings as settings

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
_MOMENTUM = ("momentum", "momentum_reversible")
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


_NET_FIELDS = {"depth", "width", "hidden", "block", "activation", "gamma", "scale", "dtype"}
"""The parameters passed on as they are to the residual model's initialisation."""


def _net_kwargs(params: Params, seed: int, device) -> dict:
    kwargs = params.model_dump(include=_NET_FIELDS) | dict(tied=params.init == "tied", seed=seed, device=device)
    if params.block != "mlp":
        kwargs["image_size"] = params.image_size
    sets = params.depth + 1 if params.scheme == "heun" else params.depth
    if params.init == "smooth":
        shape = params.model_dump(include={"width", "hidden", "block", "activation", "dtype"})
        kwargs["weights"] = smooth_weights(sets, **shape, seed=seed)
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
        **params.model_dump(include={"scheme", "backward", "depth", "width", "activation", "dtype"}),
        in_channels=data.channels,
        image_size=data.image_size,
        classes=data.num_classes,
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


def checks(table: pd.DataFrame) -> list[Check]:
    """Prop. 2.9-2.12 (rates, float64), Fig. 2.3c (gradients vs depth), section 4.3.1 (momentum), Fig. 2.4."""
    return adjoint_checks(table, metrics)


smoke = Params(scheme="heun", depth=16, width=8, batch=4, init="tied", dtype="float64")
