"""Grid expansion, exclusions, nulling of inapplicable parameters, and trial keys."""

from __future__ import annotations

import workloads
from core.trial import trial_key
from harness.spec import Sweep
from harness.sweep import expand, grid_points

PROBE = workloads.get("harness_probe")
ROOF = workloads.get("device_roofline")


def sweep(**kw) -> Sweep:
    base = dict(name="s", workload="device_roofline", backends=["torch", "jax"], grid={"n": [64, 128]})
    return Sweep(**(base | kw))


def test_grid_is_the_cartesian_product_of_lists_with_scalars_fixed():
    points = grid_points({"a": [1, 2], "b": "x", "c": [3, 4, 5]})
    assert len(points) == 6
    assert all(p["b"] == "x" for p in points)
    assert {(p["a"], p["c"]) for p in points} == {(a, c) for a in (1, 2) for c in (3, 4, 5)}


def test_trials_are_grid_times_backends_times_repeats_with_seeds_base_plus_repeat():
    trials = expand(sweep(repeats=3, base_seed=10), ROOF, device="cpu")
    assert len(trials) == 2 * 2 * 3
    assert sorted({(t.repeat, t.seed) for t in trials}) == [(0, 10), (1, 11), (2, 12)]
    assert len({t.key for t in trials}) == len(trials)


def test_exclude_drops_matching_points_only():
    trials = expand(
        sweep(grid={"n": [64, 128], "op": ["matmul", "copy"]}, exclude=[{"n": 128, "op": "copy"}]), ROOF, device="cpu"
    )
    combos = {(t.params["n"], t.params["op"]) for t in trials}
    assert combos == {(64, "matmul"), (64, "copy"), (128, "matmul")}


def test_inapplicable_parameters_are_nulled_and_make_no_duplicate_trials():
    s = Sweep(name="p", workload="harness_probe", backends=["torch"], grid={"mode": "noop", "sleep_s": [0.1, 0.2, 0.3]})
    trials = expand(s, PROBE, device="cpu")
    assert len(trials) == 1
    assert trials[0].params["sleep_s"] is None


def test_keys_are_stable_and_change_with_what_defines_a_result():
    params = ROOF.Params(n=64).model_dump(mode="json")
    key = trial_key("device_roofline", 1, "torch", "cpu", params, 0)
    assert key == trial_key("device_roofline", 1, "torch", "cpu", dict(reversed(list(params.items()))), 0)
    variants = [
        trial_key("device_roofline", 2, "torch", "cpu", params, 0),
        trial_key("device_roofline", 1, "jax", "cpu", params, 0),
        trial_key("device_roofline", 1, "torch", "cuda", params, 0),
        trial_key("device_roofline", 1, "torch", "cpu", params | {"n": 65}, 0),
        trial_key("device_roofline", 1, "torch", "cpu", params, 1),
        trial_key("device_roofline", 1, "torch", "cpu", params, 0, study="s", trial_number=0),
    ]
    assert len({key, *variants}) == 7


def test_defaults_are_filled_before_keying():
    """A grid that spells out a default gives the same trial as one that leaves it out."""
    explicit = expand(sweep(grid={"n": 64, "dtype": "float32"}), ROOF, device="cpu")
    implicit = expand(sweep(grid={"n": 64}), ROOF, device="cpu")
    assert [t.key for t in explicit] == [t.key for t in implicit]


def test_cpu_trials_take_the_whole_node_unless_told_otherwise():
    assert {t.num_cpus for t in expand(sweep(), ROOF, device="cpu", node_cpus=8)} == {8}
    assert {t.num_cpus for t in expand(sweep(resources={"gpus": 1}), ROOF, device="cuda", node_cpus=8)} == {1}
    assert {t.num_cpus for t in expand(sweep(resources={"cpus": 2}), ROOF, device="cpu", node_cpus=8)} == {2}
