"""The training loop the training workloads share: time each pass of a trainer, check its loss."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

import numpy as np


class Timer(Protocol):
    """What the loop needs of a backend: a synchronised timing that also returns the call's value."""

    def timed(self, fn: Callable[[], Any], kind: str) -> tuple[float, Any]: ...


@dataclasses.dataclass(frozen=True)
class Pass:
    """One timed pass of a trainer: an epoch, or a run of steps between evaluations.

    Attributes:
        step: the pass's number as the workload counts (epoch, or optimiser step).
        seconds: synchronised time of the pass; compilation excluded where the trainer compiled ahead.
        loss: the mean training loss over the pass.
        accuracy: the running training accuracy over the pass, None where the trainer reports none.
    """

    step: int
    seconds: float
    loss: float
    accuracy: float | None = None


def passes(
    backend: Timer,
    kind: str,
    fit: Callable[[int, np.ndarray], Any],
    orders: Iterable[tuple[int, np.ndarray]],
    *,
    lr: float,
    unit: str = "epoch",
) -> Iterator[Pass]:
    """Run and time ``fit(step, order)`` for each ``(step, order)``; yield one ``Pass`` each.

    ``orders`` is consumed lazily, so a generator drawing from the trial's random stream draws
    exactly as a hand-written loop would. A non-finite loss stops the loop.

    Args:
        backend: times each pass on the device (``timed``), synchronised.
        kind: the device kind (cpu, cuda, tpu).
        fit: one pass over the example indices ``order`` (1-D int); returns the mean loss, or
            (mean loss, running accuracy).
        orders: (step number, example indices) of each pass.
        lr: the learning rate, named in the error.
        unit: what ``step`` counts (``epoch`` or ``step``), named in the error.

    Returns:
        An iterator of ``Pass``, one per element of ``orders``.

    Raises:
        FloatingPointError: ``training loss is nan at epoch 3 (lr=0.1)`` when a pass's loss is not finite.
    """
    for step, order in orders:
        seconds, out = backend.timed(functools.partial(fit, step, order), kind)
        loss, accuracy = out if isinstance(out, tuple) else (out, None)
        if not np.isfinite(loss):
            raise FloatingPointError(f"training loss is {loss} at {unit} {step} (lr={lr})")
        yield Pass(step, seconds, loss, accuracy)
