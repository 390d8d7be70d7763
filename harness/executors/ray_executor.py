"""The Ray executor: trials as calls on reused worker actors (or fresh worker tasks) on a cluster.

Where to connect, in order: the ``--address`` given, then ``RAY_ADDRESS``, then a new embedded
local instance. A trial's timeout starts when it is handed to a ready worker.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import math
import os
import socket
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sized
from typing import Any

import ray
from ray.exceptions import OutOfMemoryError, RayActorError, WorkerCrashedError

from core.errors import ClusterLost, UserError
from core.trial import Outcome, Trial
from harness.doctor import require_here
from harness.executors._base import OnDone
from harness.executors._quiet import RayLog
from harness.fate import descendants, reap_when_gone
from harness.probe import check_ray_address, loopback_only, split_address
from harness.trial import execute, prepare, unfinished

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
        with contextlib.suppress(Exception):
            prepare(workload, backend)
        return ray.get_runtime_context().get_node_id()

    def run(self, trial: Trial) -> Outcome:
        return _with_node(execute(trial))


@ray.remote
def _run_in_fresh_worker(trial: Trial) -> Outcome:
    return _with_node(execute(trial))


def _demand(trial: Trial) -> dict[str, float]:
    need = {"CPU": trial.num_cpus, "GPU": trial.resources.gpus, "TPU": float(trial.resources.tpus)}
    return {k: v for k, v in need.items() if v}


def _options(trial: Trial) -> dict[str, Any]:
    opts: dict[str, Any] = {"num_cpus": trial.num_cpus, "num_gpus": trial.resources.gpus}
    if trial.resources.tpus:
        opts["resources"] = {"TPU": trial.resources.tpus}
    return opts


HEAD_GRACE_S = 10.0
"""How long a joined cluster's head (its GCS) may not answer before the driver gives up with ClusterLost."""


@dataclasses.dataclass
class _Running:
    trial: Trial
    attempt: int
    started: float
    start_wall: dt.datetime
    actor: Any = None


@dataclasses.dataclass
class _Sweep:
    """One ``run`` call's state: trials waiting, trials running, workers starting and ready.

    Retries wait in ``queue`` ahead of the trials still in ``source``; ``recorded`` holds the keys
    already handed to ``on_done``, so a late answer for a trial that was run again is never stored twice.
    """

    first: Trial
    source: Iterator[Trial]
    slots: int
    on_done: OnDone
    idle: list[Any]
    queue: deque[tuple[Trial, int]] = dataclasses.field(default_factory=deque)
    running: dict[ray.ObjectRef, _Running] = dataclasses.field(default_factory=dict)
    starting: dict[ray.ObjectRef, Any] = dataclasses.field(default_factory=dict)  # ping ref -> actor
    recorded: set[str] = dataclasses.field(default_factory=set)
    exhausted: bool = False

    @property
    def actors(self) -> bool:
        return self.first.isolation == "actor"

    def more(self) -> bool:
        """Whether a trial is waiting or may still come from ``source``."""
        return bool(self.queue) or not self.exhausted

    def take(self) -> tuple[Trial, int] | None:
        if self.queue:
            return self.queue.popleft()
        trial = None if self.exhausted else next(self.source, None)
        self.exhausted = trial is None
        return None if trial is None else (trial, 0)

    def record(self, run: _Running, outcome: Outcome) -> None:
        if run.trial.key not in self.recorded:
            self.recorded.add(run.trial.key)
            self.on_done(run.trial, outcome)

    def finish(self, run: _Running, status: str, error: str) -> None:
        self.record(run, unfinished(run.trial, status, error, run.started, run.start_wall))

    def stop(self, run: _Running, ref: ray.ObjectRef) -> None:
        if self.actors:
            ray.kill(run.actor, no_restart=True)
        else:
            ray.cancel(ref, force=True)


def _start_workers(s: _Sweep) -> None:
    """Actor pool: start workers (each answers a ping once ready) until the slots are full or no trial waits."""
    while s.actors and len(s.idle) + len(s.starting) + len(s.running) < s.slots and s.more():
        actor = TrialWorker.options(**_options(s.first), max_restarts=0).remote()  # type: ignore[attr-defined]
        s.starting[actor.ping.remote(s.first.workload, s.first.backend)] = actor


def _launch(s: _Sweep) -> None:
    """Hand waiting trials to ready actors, or (process isolation) to fresh tasks up to the slots."""
    while s.idle if s.actors else len(s.running) < s.slots:
        item = s.take()
        if item is None:
            return
        trial, attempt = item
        actor = s.idle.pop() if s.actors else None
        if actor is not None:
            ref = actor.run.remote(trial)
        else:
            ref = _run_in_fresh_worker.options(**_options(trial), max_retries=0).remote(trial)
        s.running[ref] = _Running(trial, attempt, time.monotonic(), dt.datetime.now(dt.timezone.utc), actor)


def _settle(s: _Sweep, ref: ray.ObjectRef) -> None:
    """A ping or a trial answered: a ready worker, a stored outcome, or a retry of a trial whose worker died."""
    if ref in s.starting:
        actor = s.starting.pop(ref)
        try:
            ray.get(ref)
            s.idle.append(actor)
        except RayActorError:
            pass  # a worker that cannot start is replaced on the next pass
        return
    run = s.running.pop(ref)
    try:
        s.record(run, ray.get(ref))
        if s.actors:
            s.idle.append(run.actor)
    except OutOfMemoryError as err:
        s.stop(run, ref)
        s.finish(run, "oom", f"killed by Ray's memory monitor: {' '.join(str(err).split())[:300]}\n{err}")
    except (RayActorError, WorkerCrashedError) as err:
        if run.attempt < RETRIES:
            s.queue.appendleft((run.trial, run.attempt + 1))
        else:  # the store keeps Ray's whole account
            s.finish(run, "crashed", f"worker died {run.attempt + 1} times; last: {type(err).__name__}\n{err}")


def _expire(s: _Sweep) -> None:
    """Stop and record as ``timeout`` every trial running longer than its ``timeout_s``."""
    now = time.monotonic()
    for ref, run in list(s.running.items()):
        if now - run.started > run.trial.timeout_s:
            del s.running[ref]
            s.stop(run, ref)
            s.finish(run, "timeout", f"exceeded timeout_s={run.trial.timeout_s:g}; worker stopped")


def _gcs_address() -> str | None:
    """The joined cluster's GCS as ``HOST:PORT``; None where Ray does not say (a ``ray://`` client)."""
    try:
        return ray.get_runtime_context().gcs_address
    except Exception:
        return None


class _Head:
    """A joined cluster's head, watched from the driver: its GCS port must accept a TCP connection.

    Ray's driver would wait a minute for a lost GCS, then exit without a word; here the run stops
    ``HEAD_GRACE_S`` after the head stopped answering, with one line naming it.
    """

    def __init__(self, address: str | None) -> None:
        self.address = address
        self.lost = False
        self._down_since: float | None = None
        self._next_check = 0.0

    def check(self) -> None:
        """At most once a second; raises ClusterLost once the head has not answered for ``HEAD_GRACE_S``."""
        now = time.monotonic()
        if self.address is None or now < self._next_check:
            return
        self._next_check = now + 1.0
        try:
            socket.create_connection(split_address(self.address), timeout=1.0).close()
            self._down_since = None
            return
        except OSError as err:
            reason = err.strerror or type(err).__name__
        self._down_since = self._down_since or now
        if time.monotonic() - self._down_since >= HEAD_GRACE_S:
            self.lost = True
            raise ClusterLost(
                f"lost the Ray head at {self.address}: its GCS has not answered for {HEAD_GRACE_S:g} s ({reason}); "
                "trials stored so far are kept: start the head again and run the same command to resume the rest"
            )


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
        self._head = _Head(None)
        """The head of a joined cluster, watched while trials run (an embedded instance is not watched)."""
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
            if not embedded:
                self._head = _Head(_gcs_address())
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
        shape = repr(tuple(sorted(_options(first).items(), key=str)))
        pool = self._idle.pop(shape, [])  # workers an earlier sweep of this shape left ready
        self._release_idle()  # workers of other shapes would hold resources this sweep needs
        s = _Sweep(first, source, slots, on_done, idle=pool[:slots], queue=deque([(first, 0)]))
        try:
            while s.more() or s.running:
                _start_workers(s)
                _launch(s)
                ready, _ = ray.wait([*s.running, *s.starting], num_returns=1, timeout=0.2)
                for ref in ready:
                    _settle(s, ref)
                _expire(s)
                self._head.check()
        finally:
            if not self._head.lost:  # with the head gone, its workers are gone too (and ray.kill would wait)
                self._idle[shape] = s.idle + pool[slots:]  # for the next sweep of this shape; close() kills them
                for actor in [*s.starting.values(), *(r.actor for r in s.running.values() if r.actor)]:
                    ray.kill(actor, no_restart=True)

    def _release_idle(self) -> None:
        for actor in (a for pool in self._idle.values() for a in pool):
            ray.kill(actor, no_restart=True)
        self._idle.clear()

    def close(self) -> None:
        try:
            if self._head.lost:
                self._idle.clear()  # its workers went with the head
                return  # and ray.shutdown would wait a minute for the lost GCS; the process exits next
            self._release_idle()
            if self._owns and ray.is_initialized():
                ray.shutdown()
            reaper = getattr(self, "_reaper", None)
            if reaper is not None:
                reaper.communicate()  # fires it: kills whatever Ray left behind
        finally:
            self.log.uninstall()
