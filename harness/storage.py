"""Where a search's Optuna study lives, opened with a connect timeout, and how trials a killed driver left go.

Only the search driver talks to the study (workers only run trials), so its storage must be safe for
that one process and must outlive it:

- ``sqlite:///PATH`` (the default, ``<out>/optuna.db``): one machine, a local disk. SQLite relies on
  POSIX file locks, which network file systems (NFS, SMB, most FUSE mounts) implement partly or not
  at all, so two processes, or one and a crash, can corrupt the database there.
- ``postgresql://USER[:PASSWORD]@HOST[:PORT]/DB``: a cluster, or any study that must survive the
  driver's machine; ``journal:///PATH``: Optuna's JournalStorage, an append-only log guarded by a
  file lock, when no database server is at hand and PATH is on the driver's local disk.

A trial left RUNNING by a killed driver is handled as Optuna's heartbeat does (``fail_stale_trials``):
the driver records a heartbeat for each trial in flight every ``heartbeat_s`` seconds; a RUNNING
trial whose last heartbeat is older than twice that belongs to a dead driver and is marked FAIL, by
the next search on the study, before each of its asks and once more at its end. A trial whose
driver is alive (another search on the same study) is left alone. Storages without heartbeats
(JournalStorage), and the default SQLite file, which the run lock on ``--out`` keeps to one driver,
mark every RUNNING trial FAIL when a search starts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import urllib.parse
import warnings
from typing import Any

from core.errors import UserError

log = logging.getLogger("deeperbench.storage")

SCHEMES = {
    "sqlite": "sqlite:///PATH",
    "postgresql": "postgresql://USER[:PASSWORD]@HOST[:PORT]/DB",
    "mysql": "mysql://USER[:PASSWORD]@HOST[:PORT]/DB",
    "journal": "journal:///PATH",
}
"""The URL forms ``--storage`` takes (a SQLAlchemy driver may follow the scheme: ``postgresql+psycopg2``)."""

CONNECT_TIMEOUT_S = 5
"""How long opening a database server waits for it, so an unreachable one fails fast."""

HEARTBEAT_S = 60
"""Default seconds between heartbeats of a trial in flight; a trial is stale after twice that."""


def default_storage(out: str) -> str:
    """``sqlite:///<out>/optuna.db``; ``out`` must then be a local directory (made here)."""
    if "://" in out and not out.startswith("file://"):
        raise UserError(f"--storage: give an Optuna RDB URL when --out is not a local path (got --out {out})")
    local = os.path.abspath(out.removeprefix("file://"))
    os.makedirs(local, exist_ok=True)
    return f"sqlite:///{local}/optuna.db"


def shown(url: str) -> str:
    """``url`` with any password replaced by ``***``, for messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def scheme_of(url: str) -> str:
    """The storage kind of ``url`` (a key of ``SCHEMES``), or UserError naming it and the allowed forms."""
    scheme = urllib.parse.urlsplit(url).scheme.split("+", 1)[0].lower() if "://" in url else ""
    if scheme not in SCHEMES:
        raise UserError(
            f"--storage: unknown scheme {scheme or 'none'!r} in '{shown(url)}'; allowed: {', '.join(SCHEMES.values())}"
        )
    return scheme


def with_driver(url: str) -> str:
    """``url`` naming psycopg2 when it says only ``postgresql://`` and psycopg 3 (SQLAlchemy's default) is missing."""
    import importlib.util

    bare = url.startswith("postgresql://")
    if bare and importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    return url


def _reason(err: BaseException) -> str:
    """The driver's own message (SQLAlchemy wraps it with a link), on one line."""
    inner = getattr(err, "orig", None) or err
    return " ".join(str(inner).split())[:300]


def open_storage(url: str, *, heartbeat_s: int = HEARTBEAT_S) -> Any:
    """Open the Optuna storage at ``url``, failing with one UserError line within ``CONNECT_TIMEOUT_S`` s.

    Args:
        url: a form of ``SCHEMES``.
        heartbeat_s: seconds between heartbeats of a trial in flight (RDB storages); stale after twice that.

    Returns:
        An ``optuna.storages.RDBStorage`` or ``JournalStorage``.
    """
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    scheme = scheme_of(url)
    if heartbeat_s < 1:
        raise UserError(f"--heartbeat-s: must be a whole number of seconds >= 1 (got {heartbeat_s})")
    try:
        if scheme == "journal":
            from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

            path = urllib.parse.urlsplit(url).path
            if not path or not os.path.isdir(os.path.dirname(path) or "."):
                raise UserError(f"--storage: '{url}' needs an existing folder for its journal file")
            return optuna.storages.JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
        target = with_driver(url)
        connect: dict[str, Any] = {}
        if scheme in ("postgresql", "mysql") and "connect_timeout" not in url:
            connect["connect_timeout"] = CONNECT_TIMEOUT_S
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                target,
                engine_kwargs={"connect_args": connect, "pool_pre_ping": True},
                heartbeat_interval=heartbeat_s,
                grace_period=2 * heartbeat_s,
            )
    except UserError:
        raise
    except (ImportError, ValueError, OSError, optuna.exceptions.StorageInternalError, SQLAlchemyError) as err:
        raise UserError(f"--storage: cannot open '{shown(url)}': {_reason(err)}") from None


def fail_stale(study: Any, *, every_running: bool) -> list[int]:
    """Mark FAIL the trials a dead driver left RUNNING (or WAITING); return their numbers.

    Args:
        study: the Optuna study.
        every_running: no other driver can be live (the default SQLite file under a held run lock,
            or a storage without heartbeats): every unfinished trial is stale.
    """
    import optuna
    from optuna.trial import TrialState

    unfinished = (TrialState.RUNNING, TrialState.WAITING)
    before = {t.number for t in study.get_trials(deepcopy=False, states=unfinished)}
    if every_running or not heartbeats(study):
        for number in sorted(before):
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError, RuntimeError, ValueError):
                study.tell(number, state=TrialState.FAIL)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
    after = {t.number for t in study.get_trials(deepcopy=False, states=[TrialState.FAIL])}
    return sorted(before & after)


def heartbeats(study: Any) -> bool:
    """Whether the study's storage records heartbeats (RDB storages here)."""
    return _beats(study._storage)


def _beats(storage: Any) -> bool:
    """Optuna's own test (an RDB storage, or the cache a study wraps around one, with an interval set)."""
    from optuna.storages._heartbeat import is_heartbeat_enabled

    return is_heartbeat_enabled(storage)


class Heartbeat:
    """One thread recording a heartbeat for every trial in flight, every ``interval_s`` seconds.

    ``add`` records one at once (a trial is never in flight without one); ``discard`` stops it.
    A failed write is logged and retried at the next beat: a database that blinks does not stop the search.
    """

    def __init__(self, storage: Any, interval_s: float) -> None:
        self.storage, self.interval_s = storage, interval_s
        self.enabled = _beats(storage)
        self._ids: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="deeperbench-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def add(self, trial_id: int) -> None:
        if self.enabled:
            self._record(trial_id)
            with self._lock:
                self._ids.add(trial_id)

    def discard(self, trial_id: int) -> None:
        with self._lock:
            self._ids.discard(trial_id)

    def _record(self, trial_id: int) -> None:
        try:
            self.storage.record_heartbeat(trial_id)
        except Exception as err:  # the next beat tries again; the trial goes stale only if every beat fails
            log.warning("heartbeat of trial id %s not recorded: %s", trial_id, _reason(err))

    def _beat(self) -> None:
        while not self._stop.wait(self.interval_s):
            with self._lock:
                ids = sorted(self._ids)
            for trial_id in ids:
                self._record(trial_id)
