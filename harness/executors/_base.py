"""What every executor offers the runner, and the host facts they share."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Protocol

from core.trial import Outcome, Trial

OnDone = Callable[[Trial, Outcome], None]


class Planner(Protocol):
    """What planning a sweep asks of where it will run: the device, the CPUs of a node, can it run at all."""

    def resolve_device(self, device: str) -> str:
        """``auto`` -> cuda, tpu or cpu from the resources this executor can reach."""

    def node_cpus(self) -> float:
        """CPUs of one node: what a timed CPU trial takes."""

    def check(self, trial: Trial) -> None:
        """Raise UserError if no node can ever run ``trial``."""


class Executor(Planner, Protocol):
    """Runs trials somewhere and reports each outcome to ``on_done`` as soon as it is known."""

    dashboard_url: str | None
    """The Ray dashboard of the cluster joined, if it has one; None otherwise."""

    def run(self, trials: Iterable[Trial], on_done: OnDone, *, max_in_flight: int | None = None) -> None:
        """Run ``trials`` (drawn lazily, one when a worker is free), at most ``max_in_flight`` at once.

        Every trial gets exactly one call of ``on_done``.
        """

    def close(self) -> None:
        """Release workers and connections."""


def local_accelerator() -> str:
    """cuda or tpu when this host has one (by its device files, no framework import), else cpu."""
    if os.path.exists("/dev/nvidia0") or os.path.exists("/dev/nvidiactl"):
        return "cuda"
    if os.path.exists("/dev/accel0") or os.path.exists("/dev/vfio/0"):
        return "tpu"
    return "cpu"
