"""The Ray executor: trials as calls on reused worker actors (or fresh worker tasks) on a cluster.

Where to connect, in order: the ``--address`` given, then ``RAY_ADDRESS``, then a new embedded
local instance. A trial's timeout starts when it is handed to a ready worker.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import os
import time
from collections import deque
from collections.abc import Iterable, Sized
from typing import Any

import ray
from ray.exceptions import OutOfMemoryError, RayActorError, WorkerCrashedError

from harness.doctor import require_here
from harness.errors import UserError
from harness.executors._base import OnDone
from harness.executors._quiet import RayLog
from harness.fate import descendants, reap_when_gone
from harness.probe import check_ray_address, loopback_only, split_address
from harness.sweep import Trial
from harness.trial import Outcome, execute, prepare, unfinished

RETRIES = 1
"""How many times a trial whose worker died is run again on a fresh worker before it counts as crashed."""


def _with_node(outcome: Outcome) -> Outcome:
    outcome.env["ray_node_id"] = ray.get_runtime_context().get_node_id()
    return outcome


@ray.remote
class TrialWorker:
    """A reused worker process: imports what its trials need once, then runs trial after trial."""

    def ping(self, workload: str, backend: str) -> str:
        """Answer once ready: with what the trials need imported (``prepare``), so no trial's span includes that.

        A module that fails to import is left for the trial to report as its failure.
        """
        try:
            prepare(workload, backend)
        except Exception:
            pass
        return ray.get_runtime_context().get_node_id()

    def run(self, trial: Trial) -> Outcome:
        return _with_node(execute(trial))


@ray.remote
def _run_in_fresh_worker(trial: Trial) -> Outcome:
    return _with_node(execute(trial))


@dataclasses.dataclass
class _Running:
    trial: Trial
    attempt: int
    started: float
    start_wall: dt.datetime
    actor: Any = None


def _demand(trial: Trial) -> dict[str, float]:
    need = {"CPU": trial.num_cpus, "GPU": trial.resources.gpus, "TPU": float(trial.resources.tpus)}
    return {k: v for k, v in need.items() if v}


def _options(trial: Trial) -> dict[str, Any]:
    opts: dict[str, Any] = {"num_cpus": trial.num_cpus, "num_gpus": trial.resources.gpus}
    if trial.resources.tpus:
        opts["resources"] = {"TPU": trial.resources.tpus}
    return opts


class RayExecutor:
    """Runs trials on a Ray cluster, at most as many at once as the nodes' resources allow."""

    def __init__(
        self, address: str | None = None, connect_timeout_s: float = 2.0, *, log: RayLog | None = None
    ) -> None:
        self._idle: dict[str, list[Any]] = {}
        self.log = log or RayLog()
        self.dashboard_url: str | None = None
        """The cluster's dashboard, when this executor joined one that has it."""
        if address and address not in ("auto", "local"):
            split_address(address)  # a malformed --address is bad input, whatever Ray this process runs
        self._owns = not ray.is_initialized()
        self._on_this_host = False
        """True for an embedded instance: trials run on this machine, whose devices can be checked here."""
        if self._owns:
            address = address or os.environ.get("RAY_ADDRESS")
            if address and address not in ("auto", "local"):
                check_ray_address(address, connect_timeout_s)  # Ray hangs on an address that is not Ray
            embedded = not address or address == "local"
            self._on_this_host = embedded
            if embedded:
                loopback_only()  # the embedded instance listens on 127.0.0.1, not on every interface
            # a killed driver takes the embedded instance along (Ray's agents outlive it by a minute)
            self._reaper = reap_when_gone(exclude=descendants()) if embedded else None
            self.log.install()  # before ray.init: its notices (token authentication) go to the log too
            try:
                # "local" always starts a new instance: None would join a `ray start` cluster of this host
                context = ray.init(
                    address="local" if embedded else address,
                    include_dashboard=False,
                    configure_logging=False,
                    log_to_driver=True,
                    _node_ip_address="127.0.0.1" if not address else None,
                )
            except (ConnectionError, RuntimeError, ValueError) as err:
                self.log.uninstall()
                raise UserError(
                    f"--address: cannot reach a Ray cluster at '{address}': {' '.join(str(err).split())[:200]}"
                ) from None
            self.log.install()  # ray.init cleared the ray logger's handlers
            url = getattr(context, "dashboard_url", None)
            if address and url:
                self.dashboard_url = url if "://" in url else f"http://{url}"
        else:
            self.log.install()

    def _nodes(self) -> list[dict[str, float]]:
        return [n["Resources"] for n in ray.nodes() if n.get("Alive")]

    def _scalable(self) -> list[tuple[dict[str, float], int]]:
        """Node shapes the cluster's autoscaler may add, with how many of each (none without one)."""
        try:
            from ray._private.state import state

            config = state.get_cluster_config()
        except Exception:
            return []
        if config is None:
            return []
        return [(dict(group.resources), group.max_count) for group in config.node_group_configs if group.max_count]

    def resolve_device(self, device: str) -> str:
        if device != "auto":
            return device
        totals = ray.cluster_resources()
        return "cuda" if totals.get("GPU") else "tpu" if totals.get("TPU") else "cpu"

    def node_cpus(self) -> float:
        return max((n.get("CPU", 0.0) for n in self._nodes()), default=1.0)

    def _slots(self, trial: Trial) -> int:
        """How many trials like ``trial`` the cluster can hold at once, nodes the autoscaler may add included."""
        need = _demand(trial)

        def fits(node: dict[str, float]) -> int:
            return min(math.floor(node.get(k, 0.0) / v + 1e-9) for k, v in need.items())

        return sum(fits(n) for n in self._nodes()) + sum(fits(shape) * count for shape, count in self._scalable())

    def check(self, trial: Trial) -> None:
        if self._on_this_host:
            require_here(trial)
        if self._slots(trial) < 1:
            shapes = [*self._nodes(), *(shape for shape, _ in self._scalable())]
            have = "; ".join(
                ", ".join(f"{k}={v:g}" for k, v in n.items() if k in ("CPU", "GPU", "TPU")) for n in shapes
            )
            raise UserError(
                f"resources: no node, present or that the autoscaler can add, can run a trial "
                f"needing {_demand(trial)}; nodes have: {have}"
            )

    def run(self, trials: Iterable[Trial], on_done: OnDone, *, max_in_flight: int | None = None) -> None:
        source = iter(trials)
        first = next(source, None)
        if first is None:
            return
        slots = self._slots(first)
        if isinstance(trials, Sized):
            slots = min(slots, len(trials))
        if max_in_flight:
            slots = min(slots, max_in_flight)
        queue: deque[tuple[Trial, int]] = deque([(first, 0)])  # (trial, attempt): retries go first
        exhausted = False
        running: dict[ray.ObjectRef, _Running] = {}
        starting: dict[ray.ObjectRef, Any] = {}  # ping ref -> actor that has not answered yet
        actor_mode = first.isolation == "actor"
        shape = tuple(sorted(_options(first).items(), key=str))
        pool = self._idle.pop(repr(shape), [])  # workers an earlier sweep of this shape left ready
        self._release_idle()  # workers of other shapes would hold resources this sweep needs
        idle: list[Any] = pool[:slots]

        def take() -> tuple[Trial, int] | None:
            nonlocal exhausted
            if queue:
                return queue.popleft()
            trial = None if exhausted else next(source, None)
            exhausted = trial is None
            return None if trial is None else (trial, 0)

        def launch(trial: Trial, attempt: int, actor: Any) -> None:
            ref = (
                actor.run.remote(trial)
                if actor_mode
                else _run_in_fresh_worker.options(**_options(trial), max_retries=0).remote(trial)
            )
            running[ref] = _Running(trial, attempt, time.monotonic(), dt.datetime.now(dt.timezone.utc), actor)

        def finish(run: _Running, status: str, error: str) -> None:
            on_done(run.trial, unfinished(run.trial, status, error, run.started, run.start_wall))

        def stop(run: _Running, ref: ray.ObjectRef) -> None:
            if actor_mode:
                ray.kill(run.actor, no_restart=True)
            else:
                ray.cancel(ref, force=True)

        try:
            while queue or running or not exhausted:
                while actor_mode and len(idle) + len(starting) + len(running) < slots and (queue or not exhausted):
                    actor = TrialWorker.options(**_options(first), max_restarts=0).remote()
                    starting[actor.ping.remote(first.workload, first.backend)] = actor
                while idle if actor_mode else len(running) < slots:
                    item = take()
                    if item is None:
                        break
                    launch(*item, idle.pop() if actor_mode else None)
                ready, _ = ray.wait([*running, *starting], num_returns=1, timeout=0.2)
                for ref in ready:
                    if ref in starting:
                        actor = starting.pop(ref)
                        try:
                            ray.get(ref)
                            idle.append(actor)
                        except RayActorError:
                            pass  # a worker that cannot start is replaced on the next pass
                        continue
                    run = running.pop(ref)
                    try:
                        on_done(run.trial, ray.get(ref))
                        if actor_mode:
                            idle.append(run.actor)
                    except OutOfMemoryError as err:
                        stop(run, ref)
                        finish(run, "oom", f"killed by Ray's memory monitor: {' '.join(str(err).split())[:300]}\n{err}")
                    except (RayActorError, WorkerCrashedError) as err:
                        if run.attempt < RETRIES:
                            queue.appendleft((run.trial, run.attempt + 1))
                        else:
                            finish(
                                run,
                                "crashed",
                                f"worker died {run.attempt + 1} times; last: {type(err).__name__}\n{err}",
                            )  # the store keeps Ray's whole account
                now = time.monotonic()
                for ref, run in list(running.items()):
                    if now - run.started > run.trial.timeout_s:
                        del running[ref]
                        stop(run, ref)
                        finish(run, "timeout", f"exceeded timeout_s={run.trial.timeout_s:g}; worker stopped")
        finally:
            self._idle[repr(shape)] = idle + pool[slots:]  # for the next sweep of this shape; close() kills them
            for actor in [*starting.values(), *(r.actor for r in running.values() if r.actor)]:
                ray.kill(actor, no_restart=True)

    def _release_idle(self) -> None:
        for actor in (a for pool in self._idle.values() for a in pool):
            ray.kill(actor, no_restart=True)
        self._idle.clear()

    def close(self) -> None:
        try:
            self._release_idle()
            if self._owns and ray.is_initialized():
                ray.shutdown()
            if getattr(self, "_reaper", None) is not None:
                self._reaper.communicate()  # fires it: kills whatever Ray left behind
        finally:
            self.log.uninstall()
