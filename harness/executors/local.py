"""The local executor: trials one at a time, each in a spawned child process, no Ray."""

from __future__ import annotations

import contextlib
import datetime as dt
import multiprocessing as mp
import os
import time
from collections.abc import Iterable
from multiprocessing.connection import Connection

from core.errors import UserError
from core.trial import Trial
from harness.doctor import require_here
from harness.executors._base import OnDone, local_accelerator
from harness.executors._quiet import RayLog
from harness.fate import die_with_parent
from harness.trial import execute, unfinished


def _child(trial: Trial, conn: Connection, parent_pid: int | None = None) -> None:
    die_with_parent(parent_pid)  # a killed driver leaves no trial running
    threads = str(trial.threads)
    os.environ.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    conn.send(execute(trial))
    conn.close()


class LocalExecutor:
    """Spawns one child per trial so that timeouts and crashes are recorded as with Ray."""

    def __init__(self, address: str | None = None, *, log: RayLog | None = None) -> None:
        self.log = log  # no Ray here: the children print to this console
        self.dashboard_url: str | None = None
        if address:
            raise UserError(
                f"--address: the local executor runs on this host only; got {address!r} (use --executor ray)"
            )

    def resolve_device(self, device: str) -> str:
        return local_accelerator() if device == "auto" else device

    def node_cpus(self) -> float:
        return float(os.cpu_count() or 1)

    def check(self, trial: Trial) -> None:
        require_here(trial)
        if trial.resources.tpus or trial.resources.gpus > 1:
            raise UserError(
                f"resources: the local executor runs one trial on this host; it cannot give "
                f"gpus={trial.resources.gpus}, tpus={trial.resources.tpus}"
            )

    def run(self, trials: Iterable[Trial], on_done: OnDone, *, max_in_flight: int | None = None) -> None:
        ctx = mp.get_context("spawn")
        for trial in trials:
            start_wall, started = dt.datetime.now(dt.timezone.utc), time.monotonic()
            receiver, sender = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_child, args=(trial, sender, os.getpid()), daemon=True)
            proc.start()
            sender.close()
            outcome = None
            if receiver.poll(trial.timeout_s):
                with contextlib.suppress(EOFError):
                    outcome = receiver.recv()
            if outcome is not None:
                proc.join()
            elif proc.is_alive() and time.monotonic() - started >= trial.timeout_s:
                proc.kill()
                proc.join()
                outcome = unfinished(trial, "timeout", f"exceeded timeout_s={trial.timeout_s:g}", started, start_wall)
            else:
                proc.join()
                outcome = unfinished(
                    trial, "crashed", f"worker process died (exit code {proc.exitcode})", started, start_wall
                )
            on_done(trial, outcome)

    def close(self) -> None:
        pass
