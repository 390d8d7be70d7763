"""A trial imports only what its workload needs: no framework for one that declares it uses no backend."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
HEAVY = ("torch", "jax", "pandas", "pyarrow")


def imported_after(code: str) -> set[str]:
    """Which of the heavy modules a fresh interpreter has imported after running ``code``."""
    report = f"import sys; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", f"{code}\n{report}"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


@pytest.mark.timeout(150)
def test_a_trial_of_a_workload_without_backend_imports_no_framework_and_records_none():
    code = """
import workloads
from harness.spec import Sweep
from harness.sweep import expand
from harness.trial import execute
trial = expand(Sweep(name="t", workload="harness_probe", backends=["torch"], grid={"mode": "noop"}),
               workloads.get("harness_probe"), device="cpu")[0]
outcome = execute(trial)
assert outcome.status == "ok" and outcome.records[0].metric == "trial_s", outcome.error
assert "framework" not in outcome.env and outcome.device_name is None, outcome
"""
    assert imported_after(code) == set()


@pytest.mark.timeout(150)
def test_prepare_imports_the_framework_only_for_a_workload_that_uses_its_backend():
    assert imported_after("from harness.trial import prepare\nprepare('harness_probe', 'torch')") == set()
    assert "torch" in imported_after("from harness.trial import prepare\nprepare('device_roofline', 'torch')")
