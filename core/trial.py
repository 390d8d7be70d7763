"""A trial (one grid point x backend x repeat, with its key) and its outcome: what every package exchanges."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import math
from typing import Any

import pydantic

from core.workload import Record


class _Strict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")


class Resources(_Strict):
    """What one trial asks of a node; ``cpus`` None means 1 with an accelerator, else a whole node."""

    cpus: pydantic.PositiveFloat | None = None
    gpus: pydantic.NonNegativeFloat = 0.0
    tpus: pydantic.NonNegativeInt = 0


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

    @property
    def threads(self) -> int:
        """Threads the trial's process uses: its whole CPUs, at least one."""
        return max(1, math.floor(self.num_cpus))


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


STATUSES = ("ok", "failed", "oom", "timeout", "crashed", "skipped")


FAILURES = ("failed", "oom", "timeout", "crashed")
"""The statuses that make ``run`` and ``search`` exit 1 (pytest's convention); ok and skipped do not."""


@dataclasses.dataclass
class Outcome:
    """How a trial ended, its records, and where and when it ran."""

    status: str
    records: list[Record]
    started_at: dt.datetime
    duration_s: float
    host: str
    device_name: str | None = None
    error: str | None = None
    env: dict[str, Any] = dataclasses.field(default_factory=dict)
