"""topk_pruning: does a relaxed top-k train a magnitude-pruned MLP faster than the hard top-k?

An MLP (64-32-32-10 on scikit-learn's digits; 784-32-32-10 on MNIST where torchvision stored it)
whose weight matrices are W_i = topkmag(W'_i), keeping ``keep`` (10%) of each matrix's entries by
magnitude with the hard operator or the relaxed one of chapter 7 (p = 2 or 4/3, lam = 1e-4), or
not pruned (``dense``, the grey baseline of Fig. 7.5), trained by SGD on cross-entropy for a budget
of ``steps`` minibatch steps (the thesis' 30 MNIST epochs are 14,070 steps of batch 128; an epoch of
digits is 10 steps). Every ``eval_every`` steps: test error, training loss, the fraction of
non-zero weights per matrix (the relaxed operator may keep the few extra entries of its pooled
block around k: ``extra_nnz`` counts them), the training time so far and the time per step.
Thesis chapter 7, section 7.6 ("Weight pruning"), Fig. 7.5, appendix 7.C.1.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Literal

import numpy as np
import pandas as pd
import pydantic

from backends import Backend
from backends.datasets import DatasetUnavailable, load_images
from backends.pruned_mlp import PrunedMLPConfig
from core.aggregate import ok_rows, summarize
from core.checks import at_least, decide, not_measured, seeds
from core.figures import Custom, Setting, per_epoch
from core.training import passes
from core.workload import DEFAULT, Check, Context, Float, Metric, OnlyIf, Record, Skip
from core.workload import Params as _Params
from workloads._relaxed_vs_hard import gain_over_hard, step_time_bars

name = "topk_pruning"
version = 2  # 2: the budget is SGD steps (was epochs); cumulative training time replaces the epoch time
backends = ("torch", "jax")
metrics = (
    Metric("test_error", "fraction", "lower", "last", "misclassified test examples (step 0 = initialisation)"),
    Metric("train_loss", "nats", "lower", "last", "mean cross-entropy over the minibatches since the last evaluation"),
    Metric(
        "nnz_frac",
        "fraction",
        "lower",
        "max",
        "non-zero entries of the pruned weights / all entries, per matrix (tag w1, w2, ...) and pooled (all)",
    ),
    Metric(
        "extra_nnz", "entries", "lower", "max", "non-zero pruned weights beyond the k kept per matrix, summed (tag all)"
    ),
    Metric(
        "train_time_s", "s", "lower", "last", "training wall time up to this step (compilation and evaluation excluded)"
    ),
    Metric(
        "step_time_s", "s", "lower", "median", "wall time of one SGD step, averaged over the steps between evaluations"
    ),
)


_IF_RELAXED = OnlyIf(operator=["relaxed"], fill=DEFAULT)
"""A null carried over from a hard or dense grid point means the default."""


class Params(_Params):
    """Pruning operator, data and SGD of one run (thesis section 7.6, appendix 7.C.1)."""

    operator: Literal["dense", "hard", "relaxed"] = pydantic.Field(
        "relaxed", description="dense: no pruning (baseline); hard or relaxed top-k in magnitude"
    )
    p: Annotated[Float | None, _IF_RELAXED] = pydantic.Field(
        2.0, description="relaxed only: 2 or 4/3 (regulariser lam/p ||y||_p^p)"
    )
    lam: Annotated[Float | None, _IF_RELAXED] = pydantic.Field(
        1e-4, gt=0, description="relaxed only: regularisation strength"
    )
    keep: Annotated[Float | None, OnlyIf(operator=["hard", "relaxed"], fill=DEFAULT)] = pydantic.Field(
        0.10, gt=0, le=1, description="fraction of each weight matrix kept (not dense)"
    )
    hidden: pydantic.PositiveInt = pydantic.Field(32, le=65536, description="width of both hidden layers")
    train_size: pydantic.PositiveInt | None = pydantic.Field(
        None, description="use the first N training images (None: all)"
    )
    steps: pydantic.PositiveInt = pydantic.Field(
        14_000, le=10_000_000, description="SGD steps (thesis: 30 MNIST epochs of batch 128 = 14,070 steps)"
    )
    eval_every: pydantic.PositiveInt = pydantic.Field(500, description="steps between evaluations; must divide steps")
    lr: Float = pydantic.Field(1e-2, gt=0, le=10, description="SGD learning rate, constant")
    batch: pydantic.PositiveInt = 128
    dataset: Literal["digits", "mnist"] = pydantic.Field(
        "digits", description="digits ships with scikit-learn; mnist is read from disk, never downloaded by default"
    )
    dtype: Literal["float32", "float64"] = "float32"

    @pydantic.field_validator("p")
    @classmethod
    def _p_allowed(cls, p: float | None) -> float | None:
        if p is not None and not (abs(p - 2.0) < 1e-12 or abs(p - 4.0 / 3.0) < 1e-12):
            raise ValueError(f"p={p!r}: allowed 2 or 4/3")
        return p

    @pydantic.model_validator(mode="after")
    def _eval_divides_steps(self) -> Params:
        if self.steps % self.eval_every:
            raise ValueError(f"eval_every={self.eval_every} must divide steps={self.steps}")
        return self


def _config(params: Params, inputs: int, classes: int) -> PrunedMLPConfig:
    relaxed = params.operator == "relaxed"
    return PrunedMLPConfig(
        sizes=(inputs, params.hidden, params.hidden, classes),
        operator=params.operator,
        keep=params.keep or 1.0,
        lam=params.lam if relaxed else 1e-4,
        p=params.p if relaxed else 2.0,
    )


def _sparsity(weights: list[np.ndarray], config: PrunedMLPConfig, step: int) -> list[Record]:
    nnz = [int(np.count_nonzero(w)) for w in weights]
    sizes = [w.size for w in weights]
    kept = [config.kept(i) if config.operator != "dense" else s for i, s in enumerate(sizes)]
    out = [Record("nnz_frac", n / s, step=step, tag=f"w{i + 1}") for i, (n, s) in enumerate(zip(nnz, sizes))]
    return out + [
        Record("nnz_frac", sum(nnz) / sum(sizes), step=step, tag="all"),
        Record("extra_nnz", float(sum(max(n - k, 0) for n, k in zip(nnz, kept))), step=step, tag="all"),
    ]


def _index_stream(n_train: int, batch: int, seed: int) -> Iterator[np.ndarray]:
    """Minibatches of indices: each epoch a fresh permutation, its last incomplete batch dropped."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 10]))
    per_epoch = n_train // batch
    while True:
        yield from rng.permutation(n_train)[: per_epoch * batch].reshape(per_epoch, batch)


def run(params: Params, backend: Backend, ctx: Context) -> list[Record]:
    """Train ``steps`` SGD steps; at step 0 and every ``eval_every`` steps record test error and sparsity."""
    try:
        data = load_images(params.dataset)
    except DatasetUnavailable as missing:
        raise Skip(str(missing)) from None
    n_train = min(params.train_size or len(data.train_y), len(data.train_y))
    if params.batch > n_train:
        raise Skip(f"batch={params.batch} is larger than the {n_train} training images")
    config = _config(params, int(np.prod(data.train_x.shape[1:])), data.num_classes)
    device, ops = backend.device(ctx.device), backend.ops
    x = backend.asarray(data.train_x[:n_train], device, params.dtype)
    y = backend.asarray(data.train_y[:n_train], device)
    x_test = backend.asarray(data.test_x, device, params.dtype)
    trainer = ops.pruned_mlp_trainer(config, ops.pruned_mlp_init(config, ctx.seed, device, params.dtype), params.lr)

    def evaluate(step: int) -> list[Record]:
        error = float(np.mean(trainer.predict(x_test) != data.test_y))
        return [Record("test_error", error, step=step)] + _sparsity(trainer.weights(), config, step)

    records = evaluate(0)
    trainer.compile(x, y, params.batch, params.eval_every)
    stream, elapsed = _index_stream(n_train, params.batch, ctx.seed), 0.0
    orders = (
        (step, np.concatenate([next(stream) for _ in range(params.eval_every)]))
        for step in range(params.eval_every, params.steps + 1, params.eval_every)
    )
    fit = lambda _, order: trainer.fit_epoch(x, y, order, params.batch)
    for done in passes(backend, ctx.device, fit, orders, lr=params.lr, unit="step"):
        elapsed += done.seconds
        records += [
            Record("train_loss", done.loss, step=done.step),
            Record("train_time_s", elapsed, step=done.step),
            Record("step_time_s", done.seconds / params.eval_every, step=done.step),
        ] + evaluate(done.step)
        ctx.logger.debug("step %d: loss %.4f, %.2f s", done.step, done.loss, elapsed)
    return records


# ----------------------------------------------------------------------------------------- report

_SERIES = ("p_operator", "p_p")
_MIN_STEPS = 5_000
"""SGD steps a speed comparison needs: at the thesis' lr 1e-2 with 10% of the weights kept, the pruned
MLPs sit on their initial plateau (test error ~0.9) for the first ~1,500 steps on digits; the thesis
trained 14,070 steps."""
_SETUP = ["p_keep", "p_hidden", "p_train_size", "p_steps", "p_eval_every", "p_lr", "p_batch", "p_dataset", "p_dtype"]
"""Parameters that hard and relaxed runs compared in a check share (keep aside: dense has none)."""


def _label(row: pd.Series) -> str:
    if row["p_operator"] == "relaxed":
        p = "4/3" if abs(float(row["p_p"]) - 4 / 3) < 1e-9 else f"{float(row['p_p']):g}"
        return f"relaxed p={p} lam={float(row['p_lam']):g}"
    return str(row["p_operator"])


def _error_vs_time(table: pd.DataFrame):
    """Fig. 7.5's axes: median test error against the median training time at each evaluation step."""
    from results.plots import median_lines  # plotly: loaded by the report only

    steps = summarize(table, metrics, by_step=True)
    keys = ["backend", "device_name", "params", "step"]
    error = steps[steps["metric"] == "test_error"]
    clock = steps[steps["metric"] == "train_time_s"][keys + ["median"]].rename(columns={"median": "time_s"})
    if error.empty or clock.empty:
        return None
    start = error[error["step"] == 0][keys].assign(time_s=0.0)
    joined = error.merge(pd.concat([start, clock]), on=keys).sort_values("step")
    return median_lines(joined, "time_s", _label, x_title="training time (s, median over seeds)", y_title="test error")


_PER_STEP = dict(series=_SERIES, x_title="SGD step")
"""A curve per operator setting against the SGD step."""
figures = (
    per_epoch(
        "Test error vs SGD step, 90% of each weight matrix pruned by magnitude (dense: no pruning)",
        "test_error",
        thesis="Fig. 7.5",
        y_title="test error",
        **_PER_STEP,
    ),
    Custom(
        "Test error vs training time, 90% of each weight matrix pruned by magnitude", _error_vs_time, thesis="Fig. 7.5"
    ),
    per_epoch(
        "Non-zero fraction of the pruned weights (all matrices) vs SGD step",
        "nnz_frac",
        where={"tag": "all"},
        y_title="non-zero fraction",
        **_PER_STEP,
    ),
    step_time_bars("Time per SGD step by pruning operator", "p_operator", ("p_p",), "operator"),
)

settings = (
    Setting(
        "Fig. 7.5",
        thesis={
            "model": "MLP 784-32-32-10, ReLU, each W_i = topkmag(W'_i) keeping 10%",
            "data": "MNIST (60,000 train)",
            "hidden width": "32",
            "kept fraction": "0.1",
            "lam, p": "1e-4; 2 and 4/3",
            "optimiser, lr": "SGD, constant 1e-2",
            "batch": "128",
            "steps": "30 epochs = 14,070",
            "seeds": "1 (not stated)",
            "device": "one GPU",
        },
        ours={
            "data": "p_dataset",
            "hidden width": "p_hidden",
            "kept fraction": "p_keep",
            "lam": "p_lam",
            "p": "p_p",
            "optimiser, lr": "p_lr",
            "batch": "p_batch",
            "steps": "p_steps",
            "training images": "p_train_size",
            "seeds": "seed",
            "backend": "backend",
            "device": "device_name",
        },
    ),
)


def _per_trial_area(table: pd.DataFrame) -> pd.DataFrame:
    """One row per trial: the mean test error over its evaluations after step 0 (the area under the curve / steps)."""
    rows = ok_rows(table)
    rows = rows[(rows["metric"] == "test_error") & (rows["step"] > 0)]
    if rows.empty:
        return rows.assign(label=pd.Series(dtype=str))
    carried = ["backend", "device_name", "params", "seed"] + [c for c in rows.columns if c.startswith("p_")]
    out = (
        rows.groupby("trial_key", sort=False)
        .agg(value=("value", "mean"), final=("value", "last"), **{c: (c, "first") for c in carried})
        .reset_index()
    )
    return out.assign(label=out.apply(_label, axis=1))


def _faster(label: str):
    """The test of 'relaxed trains faster': hard's area minus relaxed's, paired over seeds, above 0."""
    return gain_over_hard(
        "hard",
        label,
        relaxed=label,
        column="final",
        difference="hard - relaxed mean test error over training",
        medians="final test error (median)",
        missing="no seed ran both the hard and the relaxed operator",
    )


def _deviations(rows: pd.DataFrame) -> str:
    first = rows.iloc[0]
    out = []
    if first["p_dataset"] != "mnist":
        out.append(f"{first['p_dataset']} (64-32-32-10) instead of MNIST (784-32-32-10)")
    if abs(float(first["p_lr"]) - 1e-2) > 1e-12 or int(first["p_batch"]) != 128:
        out.append(f"lr {float(first['p_lr']):g}, batch {int(first['p_batch'])} (thesis 1e-2, 128)")
    if int(first["p_steps"]) < 14_000:
        out.append(f"{int(first['p_steps'])} SGD steps (thesis 14,070)")
    out.append("compared per SGD step (the thesis plots against training time on one GPU)")
    return "; ".join(out)


def checks(table: pd.DataFrame) -> list[Check]:
    """Relaxed top-k trains faster than the hard one (paired over seeds); it keeps the 10% rate of non-zero weights."""
    out: list[Check] = []
    claim = (
        "the model trained with the differentiable top-k trains significantly faster than the one trained with "
        "the hard top-k (section 7.6): its test error over training, averaged over the evaluations, is lower, "
        "paired over seeds"
    )
    trials = _per_trial_area(table)
    pruned = trials[trials["p_operator"].isin(["hard", "relaxed"])] if not trials.empty else trials
    groups = list(pruned.groupby(["backend", "device_name", *_SETUP], dropna=False)) if not pruned.empty else []
    for (backend, device, *_), g in groups:
        for label in sorted(set(g.loc[g["p_operator"] == "relaxed", "label"])):
            rows = g[g["label"].isin(["hard", label])]
            lr = float(rows["p_lr"].iloc[0])
            out.append(
                decide(
                    f"{label} trains faster than hard, {backend} ({device}), lr={lr:g}",
                    claim,
                    rows,
                    _faster(label),
                    needs=(seeds(3), at_least("p_steps", _MIN_STEPS, "SGD steps"), _both_operators(label)),
                    figure="Fig. 7.5",
                    note=_deviations(rows),
                )
            )
    if not groups or not out:
        out.append(
            decide(
                "relaxed trains faster than hard",
                claim,
                pruned.iloc[0:0],
                _faster("relaxed"),
                figure="Fig. 7.5",
                missing="needs hard and relaxed runs of the same setting",
            )
        )
    out += _keeps_rate(table)
    return out


def _both_operators(label: str):
    def need(rows: pd.DataFrame) -> str | None:
        missing = [op for op in ("hard", label) if not (rows["label"] == op).any()]
        return f"no {' or '.join(missing)} run" if missing else None

    return need


def _keeps_rate(table: pd.DataFrame) -> list[Check]:
    claim = (
        "the relaxed top-k maintains the 10% rate of non-zero weights (section 7.6): the largest non-zero "
        "fraction over the evaluations is within 1 point of keep"
    )
    rows = ok_rows(table)
    rows = rows[(rows["metric"] == "nnz_frac") & (rows["tag"] == "all") & (rows["p_operator"] == "relaxed")]
    if rows.empty:
        return [not_measured("relaxed keeps the rate", claim, "no relaxed run", figure="section 7.6")]

    def test(keep: float):
        def within(r: pd.DataFrame) -> tuple[bool, str]:
            worst = float(r["value"].max())
            return bool(
                abs(worst - keep) <= 0.01
            ), f"largest non-zero fraction {worst:.4f} over {r['trial_key'].nunique()} trial(s)"

        return within

    return [
        decide(
            f"relaxed keeps {keep:g}, {backend} ({device})",
            claim,
            g,
            test(float(keep)),
            needs=(at_least("p_steps", 1_000, "SGD steps"),),
            figure="section 7.6",
        )
        for (backend, device, keep), g in rows.groupby(["backend", "device_name", "p_keep"])
    ]


smoke = Params(operator="hard", keep=0.10, train_size=256, steps=20, eval_every=10, lr=1e-2, batch=64)
