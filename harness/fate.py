"""Child processes that die with their parent, however the parent dies (Linux)."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int | None = None) -> bool:
    """Ask the kernel to SIGKILL this process when the thread that started it exits; True if set.

    ``parent_pid`` is the parent this process expects: when it is already gone (it died before the
    request was made) this process exits at once. Outside Linux nothing is set and False returned.
    """
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return False
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)
    return True


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of ``pid`` from /proc, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return int(fields[1]), int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def descendants(pid: int | None = None) -> dict[int, int]:
    """Every live descendant of ``pid`` (default: this process) -> its start time, read from /proc."""
    root = os.getpid() if pid is None else pid
    table = {}
    for name in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if name.isdigit() and (info := _stat(int(name))):
            table[int(name)] = info
    found: dict[int, int] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for child, (ppid, start) in table.items():
            if ppid == parent and child not in found:
                found[child] = start
                frontier.append(child)
    return found


def reap_when_gone(exclude: dict[int, int] | None = None, poll_s: float = 0.5) -> subprocess.Popen | None:
    """Start a watcher that SIGKILLs this process' Ray descendants once this process is gone.

    The watcher notes this process' descendants that run Ray (pid and start time; those in
    ``exclude`` left out) every ``poll_s`` seconds while it lives, and waits for end-of-file on a pipe only this
    process holds: that comes however this process ends, SIGKILL included. Then it kills every
    descendant it noted whose pid still has the same start time (not reused). Close the returned
    process' stdin to fire it on purpose (after a clean shutdown it finds little left). None
    outside Linux.
    """
    if not sys.platform.startswith("linux"):
        return None
    skip = ",".join(f"{p}:{s}" for p, s in (exclude or {}).items()) or "-"
    code = "import harness.fate as f, sys; f._watch(int(sys.argv[1]), sys.argv[2], float(sys.argv[3]))"
    return subprocess.Popen(
        [sys.executable, "-c", code, str(os.getpid()), skip, str(poll_s)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )


def _is_ray(pid: int) -> bool:
    """Whether ``pid`` runs a Ray process (GCS, raylet, agents, workers): only those are reaped."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"ray" in f.read()
    except OSError:
        return False


def _watch(parent: int, skip: str, poll_s: float) -> None:
    import threading

    excluded = {tuple(int(x) for x in item.split(":")) for item in skip.split(",") if item != "-"}
    gone = threading.Event()

    def drain() -> None:  # the parent holds our stdin: end of file means it died
        sys.stdin.buffer.read()
        gone.set()

    threading.Thread(target=drain, daemon=True).start()
    noted: dict[int, int] = {}
    while not gone.is_set():
        noted |= {
            p: s
            for p, s in descendants(parent).items()
            if (p, s) not in excluded and p != os.getpid() and p not in noted and _is_ray(p)
        }
        gone.wait(poll_s)
    for pid, start in noted.items():
        info = _stat(pid)
        if info is not None and info[1] == start:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
