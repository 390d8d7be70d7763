"""One place builds trials (``make_trial``) and one rule gives their CPUs; search runs through the runner's session."""

from __future__ import annotations

import textwrap

import pytest

import workloads
from core.errors import UserError
from core.trial import trial_key
from harness.lock import RunLock
from harness.search import run_search
from harness.spec import Sweep
from harness.sweep import expand, make_trial, trial_cpus

PROBE = workloads.get("harness_probe")


def sweep(**fields) -> Sweep:
    base = {"name": "s", "workload": "harness_probe", "backends": ["torch", "jax"], "grid": {"index": [0, 1]}}
    return Sweep.model_validate(base | fields)


def test_expand_builds_every_trial_with_make_trial():
    s = sweep(repeats=2, base_seed=7, timeout_s=30, isolation="process", resources={"cpus": 2})
    trials = expand(s, PROBE, device="cpu", node_cpus=8)
    expected = [
        make_trial(PROBE, b, PROBE.Params(index=i), sweep=s, device="cpu", repeat=r, node_cpus=8)
        for i in (0, 1)
        for b in ("torch", "jax")
        for r in (0, 1)
    ]
    assert trials == expected
    t = trials[-1]
    assert (t.seed, t.timeout_s, t.isolation, t.num_cpus, t.repeat) == (8, 30, "process", 2, 1)


def test_a_search_trial_is_keyed_by_its_study_and_number():
    params = PROBE.Params(index=3).model_dump(mode="json")
    grid = make_trial(PROBE, "torch", params)
    first = make_trial(PROBE, "torch", params, seed=5, study="st", trial_number=0)
    second = make_trial(PROBE, "torch", params, seed=6, study="st", trial_number=1)
    assert grid.key == trial_key(PROBE.name, PROBE.version, "torch", "cpu", params, 0)
    assert len({grid.key, first.key, second.key}) == 3  # the same parameters drawn twice are two trials
    assert (first.seed, first.study, first.trial_number) == (5, "st", 0)


def test_trials_outside_a_spec_take_the_spec_defaults():
    t = make_trial(PROBE, "jax", PROBE.Params(), sweep="bench", repeat=2)
    assert (t.sweep, t.seed, t.timeout_s, t.isolation, t.num_cpus) == ("bench", 2, 600.0, "actor", 1.0)
    assert make_trial(PROBE, "jax", PROBE.Params(), num_cpus=3.5).threads == 3
    with pytest.raises(ValueError, match="resolved device"):
        make_trial(PROBE, "jax", PROBE.Params(), device="auto")


@pytest.mark.parametrize(
    "resources, cpus", [({}, 16.0), ({"gpus": 0.5}, 1.0), ({"tpus": 4}, 1.0), ({"cpus": 3, "gpus": 1}, 3.0)]
)
def test_a_cpu_trial_takes_a_whole_node_unless_it_says_otherwise(resources, cpus):
    assert trial_cpus(sweep(resources=resources).resources, node_cpus=16) == cpus


def test_a_search_on_a_folder_in_use_is_refused_by_the_run_lock(tmp_path):
    spec = tmp_path / "search.yaml"
    spec.write_text(
        textwrap.dedent("""
        name: locked
        workload: harness_probe
        backends: [torch]
        grid: {mode: noop}
        search: {metric: trial_s, direction: minimize, space: {index: {low: 0, high: 3, int: true}}}
        """)
    )
    out = str(tmp_path / "out")
    with RunLock(out), pytest.raises(UserError, match="is in use by another run"):
        run_search(str(spec), 1, out, executor_name="local")
