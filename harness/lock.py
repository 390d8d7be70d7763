"""One run at a time per results folder: a lock file naming the host and pid that holds it.

The lock is an advisory ``flock`` on ``<out>/.lock``: the kernel releases it when its process
dies however it dies, so a stale lock (a killed run's) is taken over by the next run, which says
so. The file's text names the holder for the message a refused run prints. Remote stores
(``s3://``, ``gs://``) have no such lock: a run there is not guarded against a concurrent one.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
import socket

from harness.errors import UserError

log = logging.getLogger("deeperbench.lock")

LOCK_NAME = ".lock"


def _holder(text: str) -> str:
    try:
        info = json.loads(text)
        return f"pid {info['pid']} on host {info['host']}, since {info['since']}"
    except (ValueError, KeyError, TypeError):
        return "an unknown process"


class RunLock:
    """``with RunLock(out):`` holds ``out`` for this process, or raises UserError naming the holder."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.local = "://" not in out or out.startswith("file://")
        self.path = os.path.join(os.path.abspath(out.removeprefix("file://")), LOCK_NAME)
        self._fd: int | None = None

    def acquire(self) -> None:
        if not self.local:
            return
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
                os.close(fd)
                raise UserError(
                    f"--out: '{self.out}' is in use by another run ({_holder(text)}); wait for it "
                    "to finish or give another --out"
                ) from None
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
        info = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "since": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
