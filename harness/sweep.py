"""Expand a sweep into trials: grid x backends x repeats, exclusions dropped, stable keys."""

from __future__ import annotations

import itertools
from typing import Any

import pydantic

from core.trial import Resources, Trial, trial_key
from core.workload import Workload
from harness.spec import Sweep, excluded, grid_points, normalised_rules, validate_params

DEFAULT_TIMEOUT_S = Sweep.model_fields["timeout_s"].default
"""A trial's timeout when no sweep sets one (the spec's default)."""


def trial_cpus(resources: Resources, node_cpus: float) -> float:
    """CPUs one trial takes: ``resources.cpus`` if given, 1 beside an accelerator, else a whole node.

    A timed CPU trial gets a whole node so that two never share its cores.
    """
    if resources.cpus:
        return resources.cpus
    return 1.0 if resources.gpus or resources.tpus else node_cpus


def make_trial(
    workload: Workload,
    backend: str,
    params: dict[str, Any] | pydantic.BaseModel,
    *,
    sweep: Sweep | str = "test",
    device: str = "cpu",
    repeat: int = 0,
    seed: int | None = None,
    node_cpus: float = 1.0,
    num_cpus: float | None = None,
    timeout_s: float | None = None,
    study: str | None = None,
    trial_number: int | None = None,
) -> Trial:
    """The one place a Trial is built: its key, seed, CPUs and limits from the sweep it belongs to.

    Args:
        workload: the registered workload the trial runs.
        backend: a backend name of ``workload``.
        params: validated parameters, as the JSON dump of ``workload.Params`` or the model itself.
        sweep: the sweep (its name, base seed, resources, timeout and isolation), or only a name
            for a trial outside any spec (tests, benchmarks): then the spec's defaults apply.
        device: a resolved device (not ``auto``).
        repeat: the repeat index; the seed defaults to ``base_seed + repeat``.
        seed: an explicit seed (a search seeds each trial by its number).
        node_cpus: CPUs of one node, for ``trial_cpus``; ``num_cpus`` overrides the rule.
        timeout_s: overrides the sweep's timeout.
        study, trial_number: the Optuna study and trial a search trial belongs to (part of its key).

    Returns:
        The trial, keyed by ``trial_key``.
    """
    if device == "auto":
        raise ValueError("make_trial needs a resolved device, not 'auto'")
    spec = sweep if isinstance(sweep, Sweep) else None
    name = spec.name if spec else str(sweep)
    resources = spec.resources if spec else Resources()
    dumped = params.model_dump(mode="json") if isinstance(params, pydantic.BaseModel) else params
    return Trial(
        key=trial_key(
            workload.name, workload.version, backend, device, dumped, repeat, study=study, trial_number=trial_number
        ),
        sweep=name,
        workload=workload.name,
        version=workload.version,
        backend=backend,
        device=device,
        params=dumped,
        repeat=repeat,
        seed=seed if seed is not None else (spec.base_seed if spec else 0) + repeat,
        timeout_s=timeout_s if timeout_s is not None else (spec.timeout_s if spec else DEFAULT_TIMEOUT_S),
        num_cpus=num_cpus if num_cpus is not None else trial_cpus(resources, node_cpus),
        resources=resources,
        isolation=spec.isolation if spec else "actor",
        study=study,
        trial_number=trial_number,
    )


def expand(sweep: Sweep, workload: Workload, *, device: str, node_cpus: float = 1.0) -> list[Trial]:
    """All trials of ``sweep`` on ``device`` (``auto`` already resolved), deduplicated by key.

    ``node_cpus`` is what a CPU trial without an explicit ``resources.cpus`` takes (``trial_cpus``).
    """
    if device == "auto":
        raise ValueError("expand needs a resolved device, not 'auto'")
    rules = normalised_rules(workload, sweep)
    trials: dict[str, Trial] = {}
    for point in grid_points(sweep.grid):
        params = validate_params(workload, point)
        if excluded(params, rules):
            continue
        for backend, repeat in itertools.product(sweep.backends, range(sweep.repeats)):
            trial = make_trial(
                workload, backend, params, sweep=sweep, device=device, repeat=repeat, node_cpus=node_cpus
            )
            trials.setdefault(trial.key, trial)
    return list(trials.values())
