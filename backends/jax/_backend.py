"""The JAX backend: 64-bit mode, devices, synchronised timing, compiled memory analysis."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

import jax
import jaxlib
import numpy as np

from core.backend import DeviceUnavailable

from ..host import cpu_name
from . import ops

jax.config.update("jax_enable_x64", True)

_PLATFORM = {"cpu": "cpu", "cuda": "gpu", "tpu": "tpu"}


class JaxMemory:
    """Compiled peak memory (``memory_analysis``) and residuals kept by ``jax.vjp``."""

    def peak_bytes(self, fn: Callable[..., Any], *args: Any) -> int | None:
        """Temporary plus output bytes of the compiled ``jit(fn)(*args)``, arguments excluded.

        Read from the compiled executable, so it is valid in a reused worker (JAX's
        ``peak_bytes_in_use`` cannot be reset); None where the platform reports nothing.
        """
        analysis = jax.jit(fn).lower(*args).compile().memory_analysis()
        if analysis is None:
            return None
        return int(analysis.temp_size_in_bytes + analysis.output_size_in_bytes)

    def host_peak_bytes(self, fn: Callable[..., Any], *args: Any) -> int | None:
        """The host peak JAX can give: ``peak_bytes``, the compiled executable's temporary plus output bytes.

        XLA's CPU client keeps no allocator statistics (``memory_stats()`` is None there), so on the
        CPU too the compiled memory analysis is the measure; None where the platform reports nothing.
        """
        return self.peak_bytes(fn, *args)

    def saved_bytes(self, fn: Callable[..., Any], *args: Any) -> int:
        """Bytes of the residuals ``jax.vjp(fn, *args)`` keeps for the backward, inputs excluded."""
        _, vjp_fn = jax.vjp(fn, *args)
        inputs = {id(a) for a in jax.tree_util.tree_leaves(args)}
        residuals = {id(r): r for r in jax.tree_util.tree_leaves(vjp_fn) if id(r) not in inputs}
        return int(sum(r.size * r.dtype.itemsize for r in residuals.values() if hasattr(r, "dtype")))


class JaxBackend:
    """JAX with 64-bit types enabled, on cpu, cuda (gpu) or tpu."""

    name = "jax"
    memory = JaxMemory()
    ops: ModuleType = ops

    def devices(self) -> list[str]:
        kinds = []
        for kind, platform in _PLATFORM.items():
            try:
                if jax.devices(platform):
                    kinds.append(kind)
            except RuntimeError:
                pass
        return kinds

    def device(self, kind: str) -> jax.Device:
        if kind not in _PLATFORM or kind not in self.devices():
            raise DeviceUnavailable(
                f"jax: device '{kind}' is not available here; available: {', '.join(self.devices())}"
            )
        return jax.devices(_PLATFORM[kind])[0]

    def set_threads(self, n: int) -> None:
        """Ask XLA's CPU client for ``n`` threads; effective when called before its first use."""
        flags = os.environ.get("XLA_FLAGS", "")
        if "intra_op_parallelism_threads" not in flags:
            os.environ["XLA_FLAGS"] = (
                f"{flags} --xla_cpu_multi_thread_eigen={'true' if n > 1 else 'false'} intra_op_parallelism_threads={n}".strip()
            )

    def timed(self, fn: Callable[[], Any], kind: str) -> tuple[float, Any]:
        """Seconds one call of ``fn`` takes, until every array it returns is computed, and what it returned."""
        start = time.perf_counter()
        value = jax.block_until_ready(fn())
        return time.perf_counter() - start, value

    def time_once(self, fn: Callable[[], Any], kind: str) -> float:
        """Seconds one call of ``fn`` takes on a device of ``kind``, synchronised (see ``timed``)."""
        return self.timed(fn, kind)[0]

    def asarray(self, a: np.ndarray, device: jax.Device, dtype: str | None = None) -> jax.Array:
        """Copy a NumPy array to ``device``, cast to ``dtype`` (a NumPy/JAX dtype name) if given."""
        x = jax.device_put(a, device)
        return x.astype(dtype) if dtype else x

    def to_numpy(self, x: jax.Array) -> np.ndarray:
        a = np.asarray(x)
        return a.astype(np.float64) if np.issubdtype(a.dtype, np.floating) or a.dtype.name == "bfloat16" else a

    def env_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "framework": "jax",
            "jax": jax.__version__,
            "jaxlib": jaxlib.__version__,
            "cpu": cpu_name(),
        }
        for kind in self.devices():
            dev = self.device(kind)
            info[f"{kind}_device"] = dev.device_kind
        return info

    def device_name(self, kind: str) -> str:
        return cpu_name() if kind == "cpu" else self.device(kind).device_kind

    def device_memory_bytes(self, kind: str) -> int | None:
        if kind == "cpu":
            return None
        stats = self.device(kind).memory_stats() or {}
        return stats.get("bytes_limit")


BACKEND = JaxBackend()
