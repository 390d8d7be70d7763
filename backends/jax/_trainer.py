"""The base of the JAX trainers: a compiled pass of optimiser steps, scanned over minibatch indices."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from . import _optim


def minibatch_index(order: np.ndarray, batch: int, examples: str = "training images") -> np.ndarray:
    """``order`` cut into minibatches of ``batch`` indices, the last incomplete one dropped.

    Args:
        order: (n,) int, example indices in the order they are visited.
        batch: examples per minibatch.
        examples: what the indices count, named in the error.

    Returns:
        (n // batch, batch) int64.

    Raises:
        ValueError: ``batch`` is larger than ``len(order)``.
    """
    n_batches = len(order) // batch
    if n_batches == 0:
        raise ValueError(f"batch={batch}: larger than the {len(order)} {examples}")
    return np.asarray(order[: n_batches * batch], np.int64).reshape(n_batches, batch)


class ScanTrainer:
    """A trainer whose pass is one jitted function scanning an optimiser step over minibatch indices.

    A subclass passes ``epoch``: ``(params, state, x, y, idx) -> (params, state, mean loss)`` or
    ``(..., mean loss, correct predictions)``, where ``idx`` (n_batches, batch) int64 holds the
    minibatches of one pass; the optimiser's state comes from ``_optim``. ``compile`` builds the
    pass for given shapes ahead of time, so that no timed pass includes compilation.
    """

    examples = "training images"
    """What a row of ``x`` is, named in errors."""

    def __init__(self, params: Any, optimizer: str, epoch: Callable[..., tuple]):
        self.params = params
        self._state = _optim.init(optimizer, params)
        self._epoch = jax.jit(epoch)
        self._compiled: dict[tuple, Any] = {}

    def _index(self, order: np.ndarray, batch: int) -> np.ndarray:
        return minibatch_index(order, batch, self.examples)

    @staticmethod
    def _key(x: jax.Array, y: jax.Array, idx_shape: tuple[int, ...]) -> tuple:
        return x.shape, str(x.dtype), y.shape, idx_shape

    def compile(self, x: jax.Array, y: jax.Array, batch: int, steps: int | None = None) -> None:
        """Compile a pass of ``steps`` minibatches (None: one epoch over ``x``) for these shapes."""
        idx = self._index(np.arange(x.shape[0] if steps is None else steps * batch) % x.shape[0], batch)
        key = self._key(x, y, idx.shape)
        if key not in self._compiled:
            self._compiled[key] = self._epoch.lower(self.params, self._state, x, y, idx).compile()

    def fit_epoch(self, x: jax.Array, y: jax.Array, order: np.ndarray, batch: int) -> Any:
        """One optimiser step per minibatch of ``batch`` indices of ``order`` (the last incomplete one dropped).

        ``order`` may be an epoch's permutation or any stream of indices (several epochs, part of one).

        Returns:
            The mean training loss over the pass, and with it the running training accuracy where
            the pass counts correct predictions.
        """
        idx = self._index(order, batch)
        fn = self._compiled.get(self._key(x, y, idx.shape), self._epoch)
        idx = jax.device_put(idx, next(iter(x.devices())))
        self.params, self._state, loss, *correct = fn(self.params, self._state, x, y, idx)
        return float(loss) if not correct else (float(loss), float(correct[0]) / idx.size)
