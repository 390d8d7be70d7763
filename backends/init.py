"""One NumPy initialiser shared by both backends, so the same seed gives the same weights."""

from __future__ import annotations

import numpy as np


def normal(seed: int, shape: tuple[int, ...], *, scale: float = 1.0, dtype: str = "float32") -> np.ndarray:
    """Gaussian array of ``shape`` with standard deviation ``scale``, drawn from ``seed``."""
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


def uniform(seed: int, shape: tuple[int, ...], *, bound: float, dtype: str = "float32") -> np.ndarray:
    """Uniform array on [-bound, bound] of ``shape``, drawn from ``seed`` (PyTorch's Linear init)."""
    return np.random.default_rng(seed).uniform(-bound, bound, shape).astype(dtype)
