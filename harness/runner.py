"""``deeperbench run``: validate specs, expand trials, skip stored ones, execute, store, report progress."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import tempfile
import time
import uuid
from collections import Counter

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from harness import executors
from harness.errors import UserError
from harness.executors import RayLog
from harness.executors._base import local_accelerator
from harness.lock import RunLock
from harness.paths import check_out
from harness.spec import DEVICES, MAX_TRIALS, load_specs
from harness.sweep import Trial, expand
from harness.trial import FAILURES, Outcome, first_line
from results.store import Store

LOGS = "_logs"
"""Folder under ``--out`` for Ray's own output; the underscore keeps it out of pyarrow's dataset discovery."""


@dataclasses.dataclass
class RunSummary:
    """What a run did: trials per status, those left alone because already stored ok, where things are."""

    counts: Counter
    already_done: int
    out: str
    sweeps: list[str]
    duration_s: float = 0.0
    log_path: str | None = None

    @property
    def failed(self) -> int:
        """Trials that ended failed, crashed, oom or timeout."""
        return sum(n for status, n in self.counts.items() if status in FAILURES)


@dataclasses.dataclass(frozen=True)
class Planned:
    """A trial ``--dry-run`` lists: what is stored for it now, and whether a run would start it."""

    trial: Trial
    stored: str | None
    runs: bool


def git_sha() -> str | None:
    """The project's commit, for the env of every row; None outside a git checkout."""
    try:
        top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=top, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def plan(
    spec: str,
    executor: executors.Executor,
    *,
    backend: str | None = None,
    device: str | None = None,
    max_trials: int = MAX_TRIALS,
) -> list[Trial]:
    """Every trial the spec asks for on this executor, validated and checked against the cluster."""
    if device is not None and device not in DEVICES:
        raise UserError(f"--device: unknown device '{device}'; allowed: {', '.join(DEVICES)}")
    trials: list[Trial] = []
    for sweep, workload in load_specs(spec, max_trials=max_trials):
        names = sweep.backends
        if backend is not None:
            if backend not in workload.backends:
                raise UserError(
                    f"--backend: '{backend}' is not a backend of {workload.name}; "
                    f"allowed: {', '.join(workload.backends)}"
                )
            names = [backend]
        sweep = sweep.model_copy(update={"backends": names})
        resolved = executor.resolve_device(device or sweep.device)
        expanded = expand(sweep, workload, device=resolved, node_cpus=executor.node_cpus())
        if expanded:
            executor.check(expanded[0])
        trials += expanded
    return trials


class _Offline:
    """What ``plan`` needs of an executor, answered from this host alone: nothing starts, nothing is checked."""

    dashboard_url = None

    def resolve_device(self, device: str) -> str:
        return local_accelerator() if device == "auto" else device

    def node_cpus(self) -> float:
        return float(os.cpu_count() or 1)

    def check(self, trial: Trial) -> None:
        pass


def dry_run(
    spec: str,
    out: str,
    *,
    backend: str | None = None,
    device: str | None = None,
    force: bool = False,
    max_trials: int = MAX_TRIALS,
) -> list[Planned]:
    """The trials ``run`` would consider, each with its stored status; starts no Ray and writes nothing.

    ``auto`` resolves from this host's devices; a cluster may resolve it otherwise.
    """
    trials = plan(spec, _Offline(), backend=backend, device=device, max_trials=max_trials)
    store = Store(out)
    stored = {k: v for name in sorted({t.sweep for t in trials}) for k, v in store.statuses(name).items()}
    return [Planned(t, stored.get(t.key), force or stored.get(t.key) != "ok") for t in trials]


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("ok {task.fields[ok]} failed {task.fields[failed]} skipped {task.fields[skipped]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
    )


def log_folder(out: str) -> str:
    """``<out>/_logs`` for a local ``out``; a temporary local folder when ``out`` is a URI."""
    return os.path.join(out, LOGS) if "://" not in out else tempfile.mkdtemp(prefix="deeperbench-logs-")


def announce(executor: executors.Executor, log: RayLog, out: str, console: Console) -> str | None:
    """Open Ray's log file (when Ray runs and not ``--verbose``) and print its path and the dashboard, once."""
    path = log.open(log_folder(out)) if log.installed else None
    if path:
        console.print(Text(f"Ray's own output (worker logs, worker deaths): {path}", style="dim"))
    if executor.dashboard_url:
        console.print(Text(f"Ray dashboard: {executor.dashboard_url}"))
    return path


def run(
    spec: str,
    out: str,
    *,
    executor_name: str = "ray",
    address: str | None = None,
    backend: str | None = None,
    device: str | None = None,
    force: bool = False,
    console: Console | None = None,
    verbose: bool = False,
    max_trials: int = MAX_TRIALS,
) -> RunSummary:
    """Run every trial of ``spec`` not already stored ok in ``out`` (all with ``force``).

    Every trial is stored whatever its status; the caller decides the exit status from ``counts``.
    Ray's own output goes to ``<out>/_logs/`` unless ``verbose``.
    """
    console = console or Console(stderr=True)
    began = time.monotonic()
    load_specs(spec, max_trials=max_trials)  # bad input fails here, before any worker starts or file is written
    check_out(out)
    log = RayLog(verbose=verbose)
    executor = executors.make(executor_name, address, log=log)
    lock = RunLock(out)  # one run at a time per folder; taken once the plan holds
    try:
        trials = plan(spec, executor, backend=backend, device=device, max_trials=max_trials)
        lock.acquire()
        store = Store(out)
        sweeps = sorted({t.sweep for t in trials})
        for name in sweeps:
            store.remove_temporary(name)
        stored = {k: v for name in sweeps for k, v in store.statuses(name, quarantine=True).items()}
        todo = [t for t in trials if force or stored.get(t.key) != "ok"]
        log_path = announce(executor, log, out, console) if todo else None
        run_id, sha = uuid.uuid4().hex[:12], git_sha()
        counts: Counter = Counter()
        with _progress(console) as bar:
            task = bar.add_task("trials", total=len(todo), ok=0, failed=0, skipped=0)

            def on_done(trial: Trial, outcome: Outcome) -> None:
                outcome.env["git_sha"] = sha
                store.write(trial, outcome, run_id)
                counts[outcome.status] += 1
                bad = sum(n for s, n in counts.items() if s in FAILURES)
                bar.update(task, advance=1, ok=counts["ok"], failed=bad, skipped=counts["skipped"])
                if outcome.status in FAILURES:
                    console.print(Text.assemble((outcome.status, "red"), " ", first_line(outcome.error)))

            for name in sweeps:  # one sweep at a time: each has its own resources and isolation
                executor.run([t for t in todo if t.sweep == name], on_done)
    finally:
        executor.close()
        lock.release()
    return RunSummary(
        counts=counts,
        already_done=len(trials) - len(todo),
        out=out,
        sweeps=sweeps,
        duration_s=time.monotonic() - began,
        log_path=log_path,
    )
