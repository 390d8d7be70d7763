"""Expand a sweep into trials: grid x backends x repeats, exclusions dropped, stable keys."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from typing import Any

from harness.spec import Resources, Sweep, excluded, grid_points, normalised_rules, validate_params
from harness.workload import Workload


@dataclasses.dataclass(frozen=True)
class Trial:
    """One run of a workload: a grid point on one backend and device, for one repeat."""

    key: str
    sweep: str
    workload: str
    version: int
    backend: str
    device: str
    params: dict[str, Any]
    repeat: int
    seed: int
    timeout_s: float
    num_cpus: float
    resources: Resources
    isolation: str
    study: str | None = None
    trial_number: int | None = None


def trial_key(
    workload: str,
    version: int,
    backend: str,
    device: str,
    params: dict[str, Any],
    repeat: int,
    study: str | None = None,
    trial_number: int | None = None,
) -> str:
    """A stable hash of what defines a trial's result (parameters with defaults and nulls filled)."""
    payload = {
        "workload": workload,
        "version": version,
        "backend": backend,
        "device": device,
        "params": params,
        "repeat": repeat,
    }
    if study is not None:
        payload |= {"study": study, "trial_number": trial_number}
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def expand(sweep: Sweep, workload: Workload, *, device: str, node_cpus: float = 1.0) -> list[Trial]:
    """All trials of ``sweep`` on ``device`` (``auto`` already resolved), deduplicated by key.

    ``node_cpus`` is what a CPU trial without an explicit ``resources.cpus`` takes: timed CPU
    trials get a whole node so that two never share its cores.
    """
    if device == "auto":
        raise ValueError("expand needs a resolved device, not 'auto'")
    rules = normalised_rules(workload, sweep)
    cpus = sweep.resources.cpus or (1.0 if sweep.resources.gpus or sweep.resources.tpus else node_cpus)
    trials: dict[str, Trial] = {}
    for point in grid_points(sweep.grid):
        params = validate_params(workload, point)
        if excluded(params, rules):
            continue
        for backend, repeat in itertools.product(sweep.backends, range(sweep.repeats)):
            key = trial_key(workload.name, workload.version, backend, device, params, repeat)
            trials.setdefault(
                key,
                Trial(
                    key=key,
                    sweep=sweep.name,
                    workload=workload.name,
                    version=workload.version,
                    backend=backend,
                    device=device,
                    params=params,
                    repeat=repeat,
                    seed=sweep.base_seed + repeat,
                    timeout_s=sweep.timeout_s,
                    num_cpus=cpus,
                    resources=sweep.resources,
                    isolation=sweep.isolation,
                ),
            )
    return list(trials.values())
