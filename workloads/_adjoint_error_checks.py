"""adjoint_error's checks: the rates of Prop. 2.9-2.12, Fig. 2.3c's gradients, section 4.3.1, Fig. 2.4.

References: thesis section 2.4, Prop. 2.9-2.12, Fig. 2.3c; section 2.5.2, Fig. 2.4; section 4.3.1.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.aggregate import reduce_trials
from core.checks import Check, all_hold, at_least, decide, distinct, paired_interval, seeds, span
from core.workload import Metric

ADJOINT = ("euler", "heun")
"""The schemes the adjoint reverses (Euler's and Heun's step); the others are Momentum ResNets."""
_EPS = {"float32": float(np.finfo(np.float32).eps), "float64": float(np.finfo(np.float64).eps)}


def fitted_slope(depths: np.ndarray, errors: np.ndarray, floor: float) -> tuple[float | None, int]:
    """Least-squares slope of log(error) vs log(depth) over the points above ``floor``.

    Returns:
        (slope or None when fewer than two points are above the floor, points used).
    """
    keep = np.asarray(errors) > floor
    if keep.sum() < 2:
        return None, int(keep.sum())
    return float(np.polyfit(np.log(np.asarray(depths)[keep]), np.log(np.asarray(errors)[keep]), 1)[0]), int(keep.sum())


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


def _trials(reduced: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One value per trial (and tag) of ``metric``, from the reduced rows (with each trial's seed)."""
    return reduced[reduced["metric"] == metric]


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
        rows = rows[(rows["p_train"] == False) & (rows["p_dtype"] == "float64") & rows["p_scheme"].isin(ADJOINT)]  # noqa: E712
        for d, g in _groups(rows, _CONFIG):
            rates = [
                (
                    f"Euler {what} falls like 1/N",
                    f"the {what} of the adjoint's Euler reversal (eq. {_EQ[metric]}) "
                    "is O(1/N): fitted log-log slope at most -0.7",
                    "euler",
                    -0.7,
                    props[0],
                )
            ]
            if d["p_init"] in _SMOOTH:
                rates.append(
                    (
                        f"Heun {what} falls like 1/N^2 with smooth weights",
                        f"with weights smooth in depth (Delta_theta = O(1/N)) the {what} of Heun's reversal "
                        "(eq. 2.9) is O(1/N^2): fitted log-log slope at most -1.7",
                        "heun",
                        -1.7,
                        props[1],
                    )
                )
            out += [
                decide(
                    f"{title}: {_label(d)}",
                    claim,
                    g,
                    _rate_test(scheme, bound),
                    needs=_SLOPE_NEEDS,
                    figure=figure,
                    note="random untrained residual MLPs, not a trained network",
                )
                for title, claim, scheme, bound, figure in rates
            ]
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


_TRAIN_CLAIMS = (
    (
        "adjoint falls short at small depth",
        "approximated gradients lead to a large test error at small depth: at the smallest depth, "
        "backprop's best test accuracy minus the adjoint's (paired on seed) has its 95% interval above 0",
        _gap_at("smallest"),
        _TRAIN_NEEDS + (distinct("p_depth", 2, "depths"),),
        "Fig. 2.4",
    ),
    (
        "adjoint matches backprop at large depth",
        "approximated gradients give the same performance at large depth: at the largest depth, "
        f"backprop's accuracy minus the adjoint's has its 95% interval below {_CLOSE:.0%}",
        _gap_at("largest"),
        _TRAIN_NEEDS + (span("p_depth", 8, "depths"),),
        "Fig. 2.4",
    ),
    (
        "backprop gives the same curves for ResNet and HeunNet",
        "the true backpropagation gives the same curves for the ResNet and the HeunNet: HeunNet minus "
        f"ResNet accuracy, paired on depth and seed, has its 95% interval within +-{_CLOSE:.0%}",
        _compare(
            {"p_scheme": "heun", "p_backward": "backprop"}, {"p_scheme": "euler", "p_backward": "backprop"}, "same"
        ),
        _TRAIN_NEEDS,
        "Fig. 2.4",
    ),
    (
        "HeunNet trained by the adjoint no worse than the ResNet",
        "at fixed depth, the accuracy when training a HeunNet with the adjoint method is better (or "
        "similar) than for the ResNet with the adjoint method: HeunNet minus ResNet accuracy, paired "
        f"on depth and seed, has its 95% interval above -{_CLOSE:.0%}",
        _compare(
            {"p_scheme": "heun", "p_backward": "adjoint"}, {"p_scheme": "euler", "p_backward": "adjoint"}, "no worse"
        ),
        _TRAIN_NEEDS,
        "Fig. 2.4 (Prop. 2.10 vs 2.12)",
    ),
)
"""Fig. 2.4's claims, checked per training configuration: (title, claim, test, needs, figure)."""


def _train_checks(table: pd.DataFrame) -> list[Check]:
    """Fig. 2.4, paired over seeds: the adjoint costs accuracy at small depth, not at large; Heun's adjoint is no worse."""
    rows = _trials(table, "test_acc")
    rows = rows[rows["p_train"] == True]  # noqa: E712
    return [
        decide(f"{title}: {_label(d)}", claim, g, test, needs=needs, figure=figure, note=_fig24_note(d))
        for d, g in _groups(rows, _TRAIN_CONFIG)
        for title, claim, test, needs, figure in _TRAIN_CLAIMS
    ]


def adjoint_checks(table: pd.DataFrame, metrics: tuple[Metric, ...]) -> list[Check]:
    """Prop. 2.9-2.12 (rates, float64), Fig. 2.3c (gradients vs depth), section 4.3.1 (momentum), Fig. 2.4 (training).

    Args:
        table: the workload's rows as the store holds them.
        metrics: the workload's declared metrics (how each is reduced per trial).
    """
    if "p_train" not in table or table.empty:
        return []
    reduced = reduce_trials(table, metrics)
    seed = table.drop_duplicates("trial_key").set_index("trial_key")["seed"]
    reduced = reduced.assign(seed=reduced["trial_key"].map(seed))
    return _rate_checks(reduced) + _gradient_checks(reduced) + _momentum_checks(reduced) + _train_checks(reduced)
