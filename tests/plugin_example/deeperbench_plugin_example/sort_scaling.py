"""sort_scaling: the time Python's ``sorted`` takes on ``n`` random floats, an example plugin workload.

It has the shape of every deeperbench workload (``Params``, ``run``, ``figures``, ``checks``,
``smoke``) and uses no framework (``uses_backend = False``): its trials get no backend.
"""

from __future__ import annotations

import random
import time

import pandas as pd
import pydantic

from core.aggregate import ok_rows
from core.checks import Check, decide, distinct
from core.figures import Figure
from core.workload import Context, Metric, Record
from core.workload import Params as _Params

name = "sort_scaling"
version = 1
backends = ("torch", "jax")
metrics = (Metric("sort_s", "s", "lower", "median", "one sorted() call, one sample per timing repeat"),)
uses_backend = False


class Params(_Params):
    """How long the list is and how many times it is sorted."""

    n: pydantic.PositiveInt = pydantic.Field(1000, le=10_000_000, description="list length")
    timing_repeats: pydantic.PositiveInt = 3


def run(params: Params, backend: None, ctx: Context) -> list[Record]:
    """Sort the same seeded list ``timing_repeats`` times; one record per call."""
    values = random.Random(ctx.seed).sample(range(10 * params.n), params.n)
    records = []
    for sample in range(params.timing_repeats):
        start = time.perf_counter()
        sorted(values)
        records.append(Record("sort_s", time.perf_counter() - start, sample=sample))
    return records


figures = (Figure("sorted() time against list length", metric="sort_s", x="p_n", log_x=True, log_y=True),)


def checks(table: pd.DataFrame) -> list[Check]:
    """Sorting ten times more values takes longer."""
    rows = ok_rows(table)
    rows = rows[rows["metric"] == "sort_s"]
    return [
        decide(
            "grows", "sorting takes longer on a longer list", rows, _grows, needs=(distinct("p_n", 2, "list lengths"),)
        )
    ]


def _grows(rows: pd.DataFrame) -> tuple[bool, str]:
    medians = rows.groupby("p_n")["value"].median().sort_index()
    return bool(medians.iloc[-1] > medians.iloc[0]), ", ".join(f"n={n}: {v:.2e} s" for n, v in medians.items())


smoke = Params(n=1000)
