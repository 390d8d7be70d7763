"""The report's search section: each study's history, parameter importances and best trial."""

from __future__ import annotations

import html
import os

import pandas as pd

from results import plots


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

    from harness.search import best_trial

    styles = styles or plots.Styles()
    parts, n_figs = ["<h2 id=searches>Searches (Optuna)</h2>"], 0
    for name in studies:
        study = optuna.load_study(study_name=name, storage=f"sqlite:///{os.path.abspath(db)}")
        complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
        constrained = any("constraints" in t.user_attrs for t in complete)
        best = best_trial(study, constrained)
        parts.append(
            f"<h3>{html.escape(name)}</h3><p>{len(study.trials)} trials, {len(complete)} complete, "
            f"direction {study.direction.name.lower()}{', with constraints' if constrained else ''}.</p>"
        )
        figs = [(optuna.visualization.plot_optimization_history(study), "optimisation history")] if complete else []
        if len(complete) >= 2 and len(complete[0].params) >= 1:
            try:
                figs.append((optuna.visualization.plot_param_importances(study), "parameter importances"))
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
