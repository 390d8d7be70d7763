"""Run one trial in the current process and classify how it ended (ok, skipped, failed, oom)."""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import platform
import socket
import subprocess
import sys
import time
import traceback
from typing import Any

import backends
import workloads
from core.trial import Outcome, Trial
from core.workload import Context, Skip, metric_map, uses_backend


def host_env() -> dict[str, Any]:
    """Host facts every row carries: hostname, Python, platform, library versions, the project's git commit."""
    return {
        "hostname": socket.gethostname(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        **_process_env(),
    }


@functools.cache
def _process_env() -> dict[str, Any]:
    """Versions of Ray, numpy and pyarrow, and ``git describe`` of the project (None outside a checkout); once per process."""
    from importlib import metadata

    info: dict[str, Any] = {}
    for package in ("ray", "numpy", "pyarrow"):
        try:
            info[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            info[package] = None
    try:
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )
        info["git_commit"] = done.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["git_commit"] = None
    return info


def unfinished(trial: Trial, status: str, error: str, started: float, start_wall: dt.datetime) -> Outcome:
    """The outcome of a trial that did not come back (timeout, crashed), recorded by the driver."""
    return Outcome(
        status=status,
        records=[],
        started_at=start_wall,
        duration_s=time.monotonic() - started,
        host=socket.gethostname(),
        error=f"{trial.workload} trial {trial.key}: {error}",
        env=host_env(),
    )


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or "OutOfMemory" in type(exc).__name__ or "RESOURCE_EXHAUSTED" in str(exc)


def _describe(exc: BaseException) -> str:
    """``Type: message (at file:line in function)`` on one line, then the full traceback.

    The first line is what the console shows; the store keeps all of it (the ``error`` column).
    """
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f" (at {os.path.basename(frame.filename)}:{frame.lineno} in {frame.name})" if frame else ""
    message = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {message}{where}\n{''.join(traceback.format_exception(exc)).rstrip()}"


def first_line(error: str | None) -> str:
    """The one-line summary of a stored ``error`` (its traceback follows on the next lines)."""
    return (error or "").split("\n", 1)[0]


def prepare(workload: str, backend: str) -> None:
    """Import what trials of ``workload`` need (its module; ``backend``'s framework if it uses one) ahead of them."""
    if uses_backend(workloads.get(workload)):
        backends.get(backend)


def execute(trial: Trial) -> Outcome:
    """Run ``trial`` here: set threads, load the backend if the workload uses one, call it, catch what it raises."""
    start_wall = dt.datetime.now(dt.timezone.utc)
    started = time.monotonic()
    env = host_env()
    device_name = None
    try:
        workload = workloads.get(trial.workload)
        threads = trial.threads
        backend = backends.get(trial.backend) if uses_backend(workload) else None
        if backend is not None:
            backend.set_threads(threads)
            backend.device(trial.device)
            device_name = backend.device_name(trial.device)
            env |= backend.env_info()
        ctx = Context(
            seed=trial.seed,
            device=trial.device,
            num_cpus=threads,
            deadline=started + trial.timeout_s,
            logger=logging.getLogger(f"deeperbench.{trial.workload}"),
        )
        records = workload.run(workload.Params.model_validate(trial.params), backend, ctx)
        known = metric_map(workload)
        for r in records:
            if r.metric not in known:
                raise ValueError(f"record of undeclared metric '{r.metric}'; declared: {', '.join(known)}")
        status, error = "ok", None
    except Skip as exc:
        records, status, error = [], "skipped", str(exc)
    except Exception as exc:
        records, status = [], "oom" if _is_oom(exc) else "failed"
        error = f"{trial.workload} trial {trial.key}: {_describe(exc)}"
    return Outcome(
        status=status,
        records=records,
        started_at=start_wall,
        duration_s=time.monotonic() - started,
        host=env["hostname"],
        device_name=device_name,
        error=error,
        env=env,
    )
