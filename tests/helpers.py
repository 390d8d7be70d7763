"""Tolerances in one place: float64 oracles, float32 runs, looser GPU bounds."""

from __future__ import annotations

import numpy as np

TOL = {
    "float64": dict(rtol=1e-10, atol=1e-10),
    "float32": dict(rtol=1e-5, atol=1e-5),
    "bfloat16": dict(rtol=2e-2, atol=2e-2),
}
"""rtol/atol by dtype for comparisons between backends or against an oracle, on the CPU."""


def assert_close(actual, expected, dtype: str = "float64", **override) -> None:
    """``np.testing.assert_allclose`` with the tolerance of ``dtype`` (``override`` wins)."""
    np.testing.assert_allclose(
        np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64), **(TOL[dtype] | override)
    )


def dtype_eps(dtype: str) -> float:
    """Rounding error of one accumulated result in ``dtype``, relative to the largest element."""
    return {"float64": 1e-12, "float32": 1e-5, "bfloat16": 1e-2}[dtype]


def run_rows(workload, runs, *, num_cpus: int = 1):
    """Rows as the store writes them for ``(backend, params, repeat)`` trials of ``workload`` run here.

    One thread each by default: the test models are tiny. Every trial must end ``ok``.
    """
    import pyarrow as pa

    from harness.sweep import make_trial
    from harness.trial import execute
    from results.store import trial_table

    tables = []
    for backend, params, repeat in runs:
        trial = make_trial(workload, backend, params, repeat=repeat, timeout_s=300, num_cpus=num_cpus)
        outcome = execute(trial)
        assert outcome.status == "ok", outcome.error
        tables.append(trial_table(trial, outcome, "test"))
    return pa.concat_tables(tables).to_pandas()


def smoke_params(workload, **overrides):
    """The workload's smoke parameters with ``overrides`` applied (validated again)."""
    return workload.Params.model_validate(workload.smoke.model_dump() | overrides)
