"""The Backend interface both frameworks implement, and the timing loop they share.

``tests/backends/test_protocol.py`` checks that each registered backend satisfies :class:`Backend`:
every attribute and method is there, with the same parameter names, order and defaults.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

DEVICE_KINDS = ("cpu", "cuda", "tpu")
"""The device kinds a backend may offer; a sweep's ``device`` is one of these or ``auto``."""

Array = Any
"""A torch.Tensor or a jax.Array, depending on the backend."""


class DeviceUnavailable(RuntimeError):
    """The requested device kind is not present on this machine."""


@runtime_checkable
class Memory(Protocol):
    """Peak device memory of one call and bytes kept for its backward."""

    def peak_bytes(self, fn: Callable[..., Any], *args: Any) -> int | None:
        """Peak bytes allocated while running ``fn(*args)``; None where the device keeps no count."""

    def saved_bytes(self, fn: Callable[..., Any], *args: Any) -> int:
        """Bytes that the forward ``fn(*args)`` keeps for its backward."""

    def host_peak_bytes(self, fn: Callable[..., Any], *args: Any) -> int | None:
        """Peak host (CPU) bytes while running ``fn(*args)``, where ``peak_bytes`` has no count there."""


@runtime_checkable
class Backend(Protocol):
    """One framework: devices, timing, memory, environment, host/device transfers, operators (``ops``)."""

    name: str
    memory: Memory
    ops: ModuleType

    def devices(self) -> list[str]:
        """Device kinds present here, among cpu, cuda, tpu."""

    def device(self, kind: str) -> Any:
        """The framework's device object for ``kind``; DeviceUnavailable if absent."""

    def set_threads(self, n: int) -> None:
        """Use ``n`` CPU threads for intra-op parallelism."""

    def timed(self, fn: Callable[[], Any], kind: str) -> tuple[float, Any]:
        """Seconds one call of ``fn`` takes on a device of ``kind``, synchronised, and what it returned."""

    def time_once(self, fn: Callable[[], Any], kind: str) -> float:
        """Seconds one call of ``fn`` takes on a device of ``kind``, synchronised."""

    def env_info(self) -> dict[str, Any]:
        """Framework and driver versions, device names and memory."""

    def device_name(self, kind: str) -> str:
        """Human name of the device a trial of ``kind`` runs on."""

    def device_memory_bytes(self, kind: str) -> int | None:
        """Memory of the first device of ``kind`` (None for the host CPU, or where the framework does not say)."""

    def asarray(self, a: Any, device: Any, dtype: str | None = None) -> Array:
        """A framework array holding the NumPy array ``a`` on ``device`` (from :meth:`device`), as ``dtype`` if given."""

    def to_numpy(self, x: Array) -> Any:
        """A host NumPy copy of a framework array."""


def timer(backend: Backend, fn: Callable[[], Any], *, kind: str, warmup: int = 2, repeats: int = 10) -> list[float]:
    """Time ``fn`` ``repeats`` times after ``warmup`` untimed calls; return every sample in seconds.

    The warm-up calls absorb compilation (jit, autotuning, lazy initialisation), so no sample
    includes it; each sample is synchronised on the device (CUDA events, ``block_until_ready``).
    """
    if warmup < 1 or repeats < 1:
        raise ValueError(f"timer needs warmup >= 1 and repeats >= 1, got {warmup=}, {repeats=}")
    for _ in range(warmup):
        backend.time_once(fn, kind)
    return [backend.time_once(fn, kind) for _ in range(repeats)]
