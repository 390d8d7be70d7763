"""The private modules beside the workloads: not registered, and the helpers behave as the code they replace."""

from __future__ import annotations

import pkgutil
from types import SimpleNamespace

import pandas as pd
import pytest

import workloads
from core.checks import decide, not_measured
from core.figures import LOG_XY, Figure, per_epoch
from core.workload import Skip
from workloads._relaxed_vs_hard import gain_over_hard
from workloads._vit import vit_input

PRIVATE = [m.name for m in pkgutil.iter_modules(workloads.__path__) if m.name.startswith("_")]


def test_private_modules_are_not_registered_as_workloads():
    assert {"_vit", "_relaxed_vs_hard", "_adjoint_error_checks", "_attention_stochasticity_figures"} <= set(PRIVATE)
    assert not set(PRIVATE) & set(workloads.names())


@pytest.mark.parametrize("name", ["adjoint_error", "attention_stochasticity"])
def test_split_workload_keeps_its_public_surface(name):
    w = workloads.get(name)
    for attr in ("name", "version", "Params", "smoke", "metrics", "run", "figures", "settings", "checks"):
        assert hasattr(w, attr), attr
    assert w.__name__ == f"workloads.{name}" and w.name == name


def test_per_epoch_is_a_figure_over_steps():
    assert per_epoch("t", "loss", facet="p_depth", **LOG_XY) == Figure(
        "t", "loss", "step", facet="p_depth", by_step=True, log_x=True, log_y=True
    )


def test_not_measured_matches_decide_on_no_rows():
    empty = pd.DataFrame({"value": []})
    assert not_measured("n", "c", "no run", figure="Fig. 1") == decide(
        "n", "c", empty, lambda r: (True, "x"), figure="Fig. 1", missing="no run"
    )


def test_vit_input_skips_a_patch_that_does_not_divide_the_image():
    params = SimpleNamespace(dataset="digits", patch=3, width=16)
    with pytest.raises(Skip, match="patch=3 does not divide the digits image side 8"):
        vit_input(params, 8, 1, 10)
    params.patch = 4
    assert vit_input(params, 8, 1, 10) == dict(image_size=8, channels=1, num_classes=10, patch=4, width=16)


def _rows(hard: list[float], relaxed: list[float]) -> pd.DataFrame:
    """One row per (label, seed): the hard runs' values, then the relaxed runs'."""
    labels = ["hard"] * len(hard) + ["relaxed"] * len(relaxed)
    seeds = list(range(len(hard))) + list(range(len(relaxed)))
    return pd.DataFrame({"label": labels, "seed": seeds, "value": hard + relaxed})


def test_gain_over_hard_holds_fails_and_reports_medians():
    test = gain_over_hard(
        "relaxed", "hard", relaxed="relaxed", column="value", difference="r - h", medians="medians", missing="none"
    )
    holds, text = test(_rows([0.5, 0.52, 0.51], [0.7, 0.69, 0.72]))
    assert holds is True and text.startswith("r - h = ") and text.endswith("medians hard 0.510, relaxed 0.700")
    assert test(_rows([0.7, 0.69, 0.72], [0.5, 0.52, 0.51]))[0] is False
    assert test(_rows([0.5], [])) == (None, "none")
