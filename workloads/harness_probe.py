"""harness_probe: a trial that does nothing, sleeps, raises, dies or runs out of memory, on purpose.

It measures the harness itself (per-trial overhead, ``benchmarks/harness_overhead.py``) and shows
that every way a trial can end is recorded (``sweeps/harness_probe.yaml``, the executor tests).
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Annotated, Literal

import pydantic

from backends import Backend
from core.checks import Check, decide
from core.figures import Figure
from core.workload import Context, Metric, OnlyIf, Record, Skip
from core.workload import Params as _Params

if TYPE_CHECKING:  # pandas only for the report: a trial of this probe loads no data-frame library
    import pandas as pd

name = "harness_probe"
version = 1
backends = ("torch", "jax")
metrics = (Metric("trial_s", "s", "lower", "median", "wall time inside the trial"),)
uses_backend = False
"""Its trials never touch their backend (only a label here), so they and their workers import no framework."""


class Params(_Params):
    """What the trial does: ``noop``, ``sleep`` for ``sleep_s``, ``raise``, ``exit`` (kills its worker), ``oom``, ``skip``."""

    mode: Literal["noop", "sleep", "raise", "exit", "oom", "skip"] = "noop"
    sleep_s: Annotated[pydantic.NonNegativeFloat | None, OnlyIf(mode=["sleep"])] = None
    index: pydantic.NonNegativeInt = pydantic.Field(0, description="tells apart otherwise equal trials")


def run(params: Params, backend: Backend | None, ctx: Context) -> list[Record]:
    """Do what ``params.mode`` says; record the time it took."""
    start = time.perf_counter()
    if params.mode == "sleep":
        time.sleep(params.sleep_s or 0.0)
    elif params.mode == "raise":
        raise RuntimeError("harness_probe raised on purpose")
    elif params.mode == "exit":
        os._exit(3)
    elif params.mode == "oom":
        raise MemoryError("harness_probe ran out of memory on purpose")
    elif params.mode == "skip":
        raise Skip("harness_probe skipped on purpose")
    return [Record("trial_s", time.perf_counter() - start)]


figures = (Figure("Time inside the trial, per mode", metric="trial_s", x="p_mode", kind="bar", log_y=True),)
"""Beyond the thesis: the harness' own cost is what lies outside this time."""


def checks(table: pd.DataFrame) -> list[Check]:
    """A no-op trial takes under a millisecond inside the trial: the harness' time is outside it."""
    from core.aggregate import ok_rows  # pandas: loaded by the report only

    rows = ok_rows(table)
    noop = rows[(rows["metric"] == "trial_s") & (rows["p_mode"] == "noop")]
    return [
        decide(
            "no-op",
            "a no-op trial spends under 1 ms inside the trial",
            noop,
            _under_a_millisecond,
            missing="no no-op trial",
        )
    ]


def _under_a_millisecond(rows: pd.DataFrame) -> tuple[bool, str]:
    """Every no-op trial's time inside the trial is under 1 ms."""
    return bool(rows["value"].max() < 1e-3), f"max {rows['value'].max():.2e} s over {len(rows)} trial(s)"


smoke = Params(mode="noop")
