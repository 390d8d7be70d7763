"""The report's search section: a study past ``STUDY_POINTS`` complete trials is summarised, not drawn per trial."""

from __future__ import annotations

import numpy as np
import optuna
import pandas as pd
import pytest

from results import plots, search_report
from results.search_report import search_html


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    """A real SQLite study of 120 complete trials (objective (x - 0.3)^2 + y) beside the rows naming it."""
    out = tmp_path_factory.mktemp("search")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{out}/optuna.db", direction="minimize")
    rng = np.random.default_rng(1)
    dist = {"x": optuna.distributions.FloatDistribution(0.0, 1.0), "y": optuna.distributions.FloatDistribution(0, 1)}
    for _ in range(120):
        x, y = rng.random(2)
        study.add_trial(
            optuna.trial.create_trial(params={"x": x, "y": y}, distributions=dist, value=(x - 0.3) ** 2 + y)
        )
    return str(out), study


def test_a_small_study_is_drawn_by_optuna_point_by_point(study_dir):
    out, _ = study_dir
    page, n_figs = search_html(pd.DataFrame({"study": ["s"]}), out)
    assert n_figs == 2 and "120 trials, 120 complete" in page and "random" not in page


def test_a_large_study_is_binned_and_its_importances_come_from_a_sample(study_dir, monkeypatch):
    out, study = study_dir
    monkeypatch.setattr(search_report, "STUDY_POINTS", 50)
    monkeypatch.setattr(search_report, "_BINS", 10)
    page, n_figs = search_html(pd.DataFrame({"study": ["s"]}), out, plots.Styles())
    assert n_figs == 2 and "a random 50 of the trials" in page and "120 trials, 120 complete" in page

    fig = search_report._binned_history(study.trials, minimize=True)
    binned, best = fig.data
    values = np.array([t.value for t in study.trials])
    assert len(binned.x) == 10 and np.isclose(binned.y[0], np.median(values[:12]))
    assert list(best.y) == sorted(best.y, reverse=True) and best.y[-1] == values.min()
    assert best.x[-1] == 119 and len(best.x) < len(values)
