"""One run at a time per results folder: a lock file naming the host and pid that holds it.

Local folder: an advisory ``flock`` on ``<out>/.lock``; the kernel releases it when its process
dies however it dies, so a stale lock (a killed run's) is taken over by the next run, which says
so. The file's text names the holder for the message a refused run prints.

Remote store (``s3://``, ``gs://``, any pyarrow URI): ``<out>/.lock`` is an object holding the
holder's host, pid and a random token, renewed every ``RENEW_S`` while the run lasts. A run finding
it refuses, unless it is stale: not renewed for ``LEASE_S`` (by the store's clock against this
host's), or left by a pid of this host that no longer runs. pyarrow has no create-if-absent (S3's
conditional put ``If-None-Match``), so the lock is checked, written, and read back after
``SETTLE_S``: two drivers started within about a second of each other on one prefix may both pass.
Run one driver per prefix; the lock catches the second one started while the first runs.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import socket
import threading
import time
import uuid

import pyarrow as pa
import pyarrow.fs as pafs

from core.errors import UserError
from core.paths import filesystem, is_remote

log = logging.getLogger("deeperbench.lock")

LOCK_NAME = ".lock"
LEASE_S = 120.0
"""A remote lock not renewed for this long is a killed run's; the next run takes it over."""
RENEW_S = 20.0
"""How often a run renews its remote lock."""
SETTLE_S = 1.0
"""How long a run waits before reading its remote lock back (a second driver's write would show by then)."""


def _holder(text: str) -> str:
    try:
        info = json.loads(text)
        return f"pid {info['pid']} on host {info['host']}, since {info['since']}"
    except (ValueError, KeyError, TypeError):
        return "an unknown process"


def _me(token: str = "") -> dict:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "since": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    } | ({"token": token} if token else {})


def _gone_from_this_host(info: dict) -> bool:
    """True when ``info`` names a pid of this host that no longer runs."""
    if info.get("host") != socket.gethostname() or not isinstance(info.get("pid"), int):
        return False
    try:
        os.kill(info["pid"], 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False
    return False


def _refused(out: str, text: str, extra: str = "") -> UserError:
    return UserError(
        f"--out: '{out}' is in use by another run ({_holder(text)}){extra}; wait for it to finish or give another --out"
    )


class _ObjectLock:
    """The lock of a remote store: the object ``<out>/.lock``, renewed by a thread while held (module docstring)."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.fs, root = filesystem(out)
        self.path = f"{root}/{LOCK_NAME}"
        self.token = uuid.uuid4().hex
        self.since = _me()["since"]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self) -> tuple[str, float] | None:
        """The lock's text and its age in seconds, or None when there is none."""
        info = self.fs.get_file_info(self.path)
        if info.type == pafs.FileType.NotFound:
            return None
        try:
            with self.fs.open_input_stream(self.path) as f:
                text = f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return None
        mtime = info.mtime or dt.datetime.now(dt.timezone.utc)
        if mtime.tzinfo is None:
            mtime = mtime.replace(tzinfo=dt.timezone.utc)
        return text, (dt.datetime.now(dt.timezone.utc) - mtime).total_seconds()

    def _ours(self, text: str) -> bool:
        try:
            return json.loads(text).get("token") == self.token
        except (ValueError, AttributeError):
            return False

    def _write(self) -> None:
        info = _me(self.token) | {"since": self.since}
        with self.fs.open_output_stream(self.path) as f:
            f.write(json.dumps(info).encode())

    def acquire(self) -> None:
        found = self._read()
        if found is not None:
            text, age_s = found
            try:
                info = json.loads(text)
            except ValueError:
                info = {}
            if not (age_s > LEASE_S or _gone_from_this_host(info if isinstance(info, dict) else {})):
                raise _refused(self.out, text, f", renewed {max(age_s, 0):.0f} s ago")
            log.warning(
                "taking over the lock of a run that is no longer running (%s; renewed %.0f s ago)", _holder(text), age_s
            )
        self._write()
        time.sleep(SETTLE_S)
        found = self._read()
        if found is None or not self._ours(found[0]):
            raise _refused(self.out, found[0] if found else "", " (it took the lock as this run did)")
        self._thread = threading.Thread(target=self._renew, name="deeperbench-lock", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_S):
            try:
                found = self._read()
                if found is None or not self._ours(found[0]):
                    log.error("lost the lock of %s to %s", self.out, _holder(found[0]) if found else "nobody")
                    return
                self._write()
            except (OSError, pa.ArrowException) as err:  # the store is away for a while: try again later
                log.warning("could not renew the lock of %s: %s", self.out, " ".join(str(err).split())[:200])

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with contextlib.suppress(OSError, pa.ArrowException):
            found = self._read()
            if found is not None and self._ours(found[0]):
                self.fs.delete_file(self.path)


class RunLock:
    """``with RunLock(out):`` holds ``out`` for this process, or raises UserError naming the holder."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.local = not is_remote(out)
        self.path = os.path.join(os.path.abspath(out.removeprefix("file://")), LOCK_NAME) if self.local else ""
        self._fd: int | None = None
        self._object: _ObjectLock | None = None

    def acquire(self) -> None:
        if not self.local:
            self._object = _ObjectLock(self.out)
            self._object.acquire()
            return
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
                os.close(fd)
                raise _refused(self.out, text) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:  # else the holder released and removed it between our open and flock: try again
                break
            os.close(fd)
        stale = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        if stale:
            log.warning("taking over the lock of a run that is no longer running (%s)", _holder(stale))
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_me()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._object is not None:
            self._object.release()
            self._object = None
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
