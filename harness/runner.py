"""``deeperbench run``: validate specs, expand trials, skip stored ones, execute, store, report progress."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from core.errors import UserError
from core.paths import check_out
from core.trial import FAILURES, Outcome, Trial
from harness import executors
from harness.executors import RayLog
from harness.executors._base import OnDone, local_accelerator
from harness.lock import RunLock
from harness.spec import DEVICES, MAX_TRIALS, load_specs
from harness.sweep import expand
from harness.trial import first_line
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
    executor: executors.Planner,
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
    store = Store(out, "--out")
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


class Session:
    """What ``run`` and ``search`` share: the executor, the run lock on ``out``, the store, and a progress
    bar over trials whose every outcome is stored (with the run id and commit) as it comes back.

    ``with Session(...) as session:`` closes the executor and releases the lock however the block ends.
    """

    def __init__(self, out: str, executor_name: str, address: str | None, verbose: bool, console: Console) -> None:
        self.out, self.console = out, console
        self.log = RayLog(verbose=verbose)
        self.executor = executors.make(executor_name, address, log=self.log)
        self.lock = RunLock(out)  # one run at a time per folder; taken by ``hold`` once the plan holds
        self.store: Store | None = None  # opened by ``hold``
        self.counts: Counter = Counter()
        self.log_path: str | None = None
        self._bar: tuple[Progress, Any] | None = None

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.executor.close()
        finally:
            self.lock.release()

    def hold(self) -> Store:
        """Take the run lock on ``out`` (a second run there is refused) and return its store."""
        self.lock.acquire()
        self.store = Store(self.out, "--out")
        return self.store

    def tally(self, status: str) -> None:
        """Count a trial that ended without running (a sampled point its parameters refuse) and advance the bar."""
        self.counts[status] += 1
        if self._bar is not None:
            bar, task = self._bar
            bad = sum(n for s, n in self.counts.items() if s in FAILURES)
            bar.update(task, advance=1, ok=self.counts["ok"], failed=bad, skipped=self.counts["skipped"])

    def execute(
        self,
        batches: Iterable[Iterable[Trial]],
        *,
        total: int,
        then: OnDone | None = None,
        max_in_flight: int | None = None,
    ) -> Counter:
        """Run each batch of trials in turn on the executor, storing every outcome, then calling ``then`` on it.

        Args:
            batches: trials drawn lazily, a batch at a time (a sweep each: its own resources and isolation).
            total: trials expected, for the progress bar.
            then: called after each outcome is stored (a search tells Optuna there).
            max_in_flight: at most this many trials at once (the executor's slots otherwise).

        Returns:
            Trials per status, those counted by ``tally`` included.
        """
        if total:
            self.log_path = announce(self.executor, self.log, self.out, self.console)
        store = self.store if self.store is not None else self.hold()
        run_id, sha = uuid.uuid4().hex[:12], git_sha()

        def on_done(trial: Trial, outcome: Outcome) -> None:
            outcome.env["git_sha"] = sha
            store.write(trial, outcome, run_id)
            self.tally(outcome.status)
            if outcome.status in FAILURES:
                self.console.print(Text.assemble((outcome.status, "red"), " ", first_line(outcome.error)))
            if then is not None:
                then(trial, outcome)

        with _progress(self.console) as bar:
            self._bar = (bar, bar.add_task("trials", total=total, ok=0, failed=0, skipped=0))
            try:
                for batch in batches:
                    self.executor.run(batch, on_done, max_in_flight=max_in_flight)
            finally:
                self._bar = None
        return self.counts


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
    with Session(out, executor_name, address, verbose, console) as session:
        trials = plan(spec, session.executor, backend=backend, device=device, max_trials=max_trials)
        store = session.hold()
        sweeps = sorted({t.sweep for t in trials})
        for name in sweeps:
            store.remove_temporary(name)
        stored = {k: v for name in sweeps for k, v in store.statuses(name, quarantine=True).items()}
        todo = [t for t in trials if force or stored.get(t.key) != "ok"]
        counts = session.execute(([t for t in todo if t.sweep == name] for name in sweeps), total=len(todo))
    return RunSummary(
        counts=counts,
        already_done=len(trials) - len(todo),
        out=out,
        sweeps=sweeps,
        duration_s=time.monotonic() - began,
        log_path=session.log_path,
    )
