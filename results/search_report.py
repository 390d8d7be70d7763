"""The report's search section: each study's history, parameter importances and best trial.

A study of more than ``STUDY_POINTS`` complete trials is summarised rather than drawn point by point:
its history shows the best value so far and, per bin of consecutive trials, the median and IQR of
their values; its parameter importances are computed on a seeded random sample of that many trials.
The page then stays small and quick to build for a 10^5-trial study.
"""

from __future__ import annotations

import html
import os

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from results import plots

STUDY_POINTS = 2_000
"""Complete trials of a study drawn one by one; a larger study is drawn as a summary (see the module's doc)."""
_BINS = 200


def search_html(df: pd.DataFrame, out: str, styles: plots.Styles | None = None) -> tuple[str, int]:
    """HTML for the studies whose trials are in ``df``, read from ``<out>/optuna.db``; and its figure count.

    Figures get the report's style (``styles``) and sit in its two-column grid.
    """
    studies = sorted(df["study"].dropna().unique()) if "study" in df else []
    if not studies:
        return "", 0
    db = os.path.join(out, "optuna.db")
    if not os.path.exists(db):
        return (
            f"<h2 id=searches>Searches</h2><p class=na>Trials of {', '.join(map(html.escape, studies))} are "
            "stored here, but their study lives in another Optuna storage.</p>"
        ), 0
    import optuna
    from optuna.trial import TrialState

    pass

    styles = styles or plots.Styles()
    parts, n_figs = ["<h2 id=searches>Searches (Optuna)</h2>"], 0
    for name in studies:
        study = optuna.load_study(study_name=name, storage=f"sqlite:///{os.path.abspath(db)}")
        trials = study.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        constrained = any("constraints" in t.user_attrs for t in complete)
        best = best_trial(study, constrained)
        large = len(complete) > STUDY_POINTS
        parts.append(
            f"<h3>{html.escape(name)}</h3><p>{len(trials)} trials, {len(complete)} complete, "
            f"direction {study.direction.name.lower()}{', with constraints' if constrained else ''}.</p>"
        )
        if large:
            history = (_binned_history(complete, study.direction.name == "MINIMIZE"), "optimisation history")
        else:
            history = (optuna.visualization.plot_optimization_history(study), "optimisation history")
        figs = [history] if complete else []
        if len(complete) >= 2 and len(complete[0].params) >= 1:
            try:
                sample = _sample(study, complete) if large else study
                what = (
                    f"parameter importances (a random {STUDY_POINTS} of the trials)"
                    if large
                    else "parameter importances"
                )
                figs.append((optuna.visualization.plot_param_importances(sample), what))
            except (RuntimeError, ValueError) as err:
                parts.append(f"<p class=na>No parameter importances: {html.escape(str(err))}</p>")
        drawn = [plots.finish(f, f"{name}: {what}", styles) for f, what in figs]
        if drawn:
            parts.append("<div class=figs>" + "".join(plots.embed(f) for f in drawn) + "</div>")
        n_figs += len(drawn)
        if best is None:
            parts.append("<p class=fails>No feasible complete trial.</p>")
        else:
            parts.append(
                f"<p>Best trial {best.number}: value {best.value:.6g}, parameters "
                f"<code>{html.escape(str(best.params))}</code></p>"
            )
    return "\n".join(parts), n_figs


def _binned_history(complete: list, minimize: bool) -> go.Figure:
    """The best value so far, and per bin of consecutive trials the median value with its IQR, of a large study.

    Args:
        complete: the study's complete trials (optuna ``FrozenTrial``), more than ``STUDY_POINTS``.
        minimize: the study's direction.

    Returns:
        A figure of at most ``_BINS`` binned points and one step line of the changes of the best value.
    """
    numbers = np.array([t.number for t in complete])
    values = np.array([t.value for t in complete], dtype=float)
    order = np.argsort(numbers, kind="stable")
    numbers, values = numbers[order], values[order]
    bins = np.array_split(np.arange(len(values)), _BINS)
    x = [float(np.median(numbers[b])) for b in bins]
    q25, median, q75 = (np.array([np.quantile(values[b], q) for b in bins]) for q in (0.25, 0.5, 0.75))
    best = (np.minimum if minimize else np.maximum).accumulate(values)
    changes = np.union1d(np.flatnonzero(np.r_[True, best[1:] != best[:-1]]), [len(best) - 1])  # and the last trial
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=x,
            y=median,
            mode="markers",
            name=f"median of {len(values) // _BINS}-{-(-len(values) // _BINS)} trials (IQR bars)",
            error_y=dict(type="data", symmetric=False, array=q75 - median, arrayminus=median - q25),
        )
    )
    fig.add_trace(
        go.Scatter(x=numbers[changes], y=best[changes], mode="lines", line_shape="hv", name="best value so far")
    )
    fig.update_layout(xaxis_title="trial", yaxis_title="objective value")
    return fig


def _sample(study, complete: list):
    """An in-memory study holding a seeded random ``STUDY_POINTS`` of ``complete``, for parameter importances."""
    import optuna

    chosen = np.random.default_rng(0).choice(len(complete), size=STUDY_POINTS, replace=False)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created in memory" in the output
    try:
        sample = optuna.create_study(direction=study.direction)
    finally:
        optuna.logging.set_verbosity(verbosity)
    sample.add_trials([complete[i] for i in sorted(chosen)])
    return sample


def best_trial(study, constrained: bool):
    """The best complete trial; with constraints, the best feasible one (None if there is none)."""
    from optuna.trial import TrialState

    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    if constrained:
        done = [t for t in done if all(c <= 0 for c in t.user_attrs.get("constraints", [1.0]))]
    if not done:
        return None
    pick = min if study.direction.name == "MINIMIZE" else max
    return pick(done, key=lambda t: t.value)
