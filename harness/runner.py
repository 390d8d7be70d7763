"""``deeperbench run``: validate specs, expand trials, skip stored ones, execute, store, report progress."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import uuid
from collections import Counter

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from harness import executors
from harness.errors import UserError
from harness.spec import DEVICES, load_specs
from harness.sweep import Trial, expand
from harness.trial import Outcome
from results.store import Store


@dataclasses.dataclass
class RunSummary:
    """What a run did: trials per status, and those left alone because already stored ok."""

    counts: Counter
    already_done: int
    out: str
    sweeps: list[str]


def git_sha() -> str | None:
    """The project's commit, for the env of every row; None outside a git checkout."""
    try:
        top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=top, capture_output=True, text=True,
                              timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def plan(spec: str, executor: executors.Executor, *, backend: str | None = None,
         device: str | None = None) -> list[Trial]:
    """Every trial the spec asks for on this executor, validated and checked against the cluster."""
    if device is not None and device not in DEVICES:
        raise UserError(f"--device: unknown device '{device}'; allowed: {', '.join(DEVICES)}")
    trials: list[Trial] = []
    for sweep, workload in load_specs(spec):
        names = sweep.backends
        if backend is not None:
            if backend not in workload.backends:
                raise UserError(f"--backend: '{backend}' is not a backend of {workload.name}; "
                                f"allowed: {', '.join(workload.backends)}")
            names = [backend]
        sweep = sweep.model_copy(update={"backends": names})
        resolved = executor.resolve_device(device or sweep.device)
        expanded = expand(sweep, workload, device=resolved, node_cpus=executor.node_cpus())
        if expanded:
            executor.check(expanded[0])
        trials += expanded
    return trials


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("ok {task.fields[ok]} failed {task.fields[failed]} skipped {task.fields[skipped]}"),
                    TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console)


def run(spec: str, out: str, *, executor_name: str = "ray", address: str | None = None,
        backend: str | None = None, device: str | None = None, force: bool = False,
        console: Console | None = None) -> RunSummary:
    """Run every trial of ``spec`` not already stored ok in ``out`` (all with ``force``)."""
    console = console or Console(stderr=True)
    load_specs(spec)  # bad input fails here, before any worker starts or file is written
    executor = executors.make(executor_name, address)
    try:
        trials = plan(spec, executor, backend=backend, device=device)
        store = Store(out)
        sweeps = sorted({t.sweep for t in trials})
        for name in sweeps:
            store.remove_temporary(name)
        stored = {k: v for name in sweeps for k, v in store.statuses(name).items()}
        todo = [t for t in trials if force or stored.get(t.key) != "ok"]
        run_id, sha = uuid.uuid4().hex[:12], git_sha()
        counts: Counter = Counter()
        with _progress(console) as bar:
            task = bar.add_task("trials", total=len(todo), ok=0, failed=0, skipped=0)

            def on_done(trial: Trial, outcome: Outcome) -> None:
                outcome.env["git_sha"] = sha
                store.write(trial, outcome, run_id)
                counts[outcome.status] += 1
                bad = sum(n for s, n in counts.items() if s not in ("ok", "skipped"))
                bar.update(task, advance=1, ok=counts["ok"], failed=bad, skipped=counts["skipped"])
                if outcome.status not in ("ok", "skipped"):
                    console.print(f"[red]{outcome.status}[/red] {outcome.error}")

            for name in sweeps:  # one sweep at a time: each has its own resources and isolation
                executor.run([t for t in todo if t.sweep == name], on_done)
    finally:
        executor.close()
    return RunSummary(counts=counts, already_done=len(trials) - len(todo), out=out,
                      sweeps=sweeps)
