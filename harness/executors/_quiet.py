"""Ray's own output (its logger, worker logs, raylet notices such as a worker's death) kept off the console.

By default it goes to one log file under the results folder (``<out>/_logs/``: pyarrow's dataset
discovery skips names that start with an underscore); ``verbose`` leaves Ray printing as it does.
Until the runner names the file (after the spec and flags are checked), lines wait in memory, so
bad input still writes nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from typing import Any, TextIO

_RAY_LOGGERS = ("ray", "ray._private")
"""``ray._private`` too: ``ray.init`` clears the ``ray`` logger's handlers before its token notice."""


class _Handler(logging.Handler):
    def __init__(self, log: RayLog) -> None:
        super().__init__()
        self.log = log
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.log.write(self.format(record))


class RayLog:
    """Where Ray's own output goes while an executor runs; ``path`` is None until ``open``."""

    def __init__(self, verbose: bool = False) -> None:
        self.verbose = verbose
        self.path: str | None = None
        self._pending: list[str] = []
        self._file: TextIO | None = None
        self._lock = threading.Lock()
        self._saved: dict[str, Any] | None = None
        self._handler = _Handler(self)

    @property
    def installed(self) -> bool:
        """Whether Ray's output is being taken off the console now."""
        return self._saved is not None

    def write(self, text: str) -> None:
        """Append ``text`` (one or more lines) to the file, or keep it until the file is opened."""
        with self._lock:
            if self._file is None:
                self._pending.append(text)
            else:
                self._file.write(text.rstrip("\n") + "\n")
                self._file.flush()

    def open(self, directory: str) -> str | None:
        """Start writing to ``directory/ray-<UTC time>-<pid>.log`` (created); None when verbose or not installed."""
        if not self.installed:
            return None
        os.makedirs(directory, exist_ok=True)
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        path = os.path.join(directory, f"ray-{stamp}-{os.getpid()}.log")
        with self._lock:
            self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 -- closed in uninstall()
            for text in self._pending:
                self._file.write(text.rstrip("\n") + "\n")
            self._pending.clear()
            self._file.flush()
        self.path = path
        return path

    def _print(self, data: dict[str, Any], ignore_prefix: bool = False) -> None:
        """Replaces ``ray._private.worker.print_to_stdstream``: worker lines and raylet notices to the file."""
        source = data.get("actor_name") or data.get("task_name") or data.get("pid", "?")
        self.write("\n".join(f"({source}) {line}" for line in data.get("lines", [])))

    def install(self) -> None:
        """Route Ray's loggers and the lines Ray prints for the driver here (nothing when verbose).

        Called again after ``ray.init``, which clears the ``ray`` logger's handlers, it puts this one back.
        """
        if self.verbose:
            return
        import ray._private.worker as ray_worker

        if self._saved is None:
            self._saved = {
                "loggers": {
                    name: (logging.getLogger(name).handlers[:], logging.getLogger(name).propagate)
                    for name in _RAY_LOGGERS
                },
                "print": getattr(ray_worker, "print_to_stdstream", None),
            }
            if self._saved["print"] is not None:  # read by Ray at each call, and bound by ray.init
                ray_worker.print_to_stdstream = self._print
        for name in _RAY_LOGGERS:
            logger = logging.getLogger(name)
            logger.handlers = [self._handler]
            logger.propagate = False

    def uninstall(self) -> None:
        """Give Ray its console back and close the file."""
        if self._saved is not None:
            import ray._private.worker as ray_worker

            for name, (handlers, propagate) in self._saved["loggers"].items():
                logger = logging.getLogger(name)
                logger.handlers, logger.propagate = handlers, propagate
            if self._saved["print"] is not None:
                ray_worker.print_to_stdstream = self._saved["print"]
            self._saved = None
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
