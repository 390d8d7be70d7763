"""The torch backend: devices, synchronised timing, memory meters, environment."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
import torch

from core.backend import DeviceUnavailable

from ..host import cpu_name, nvidia_driver
from . import ops


class TorchMemory:
    """Peak CUDA bytes of a call, peak host bytes from the profiler, bytes saved for backward (``saved_tensors_hooks``)."""

    def peak_bytes(self, fn: Callable[..., Any], *args: Any) -> int | None:
        """Peak bytes allocated above the pre-call level while ``fn(*args)`` runs (CUDA only).

        ``reset_peak_memory_stats`` makes the count valid in a reused worker. On the CPU torch
        keeps no allocator statistics, so the answer is None.
        """
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        if not tensors or tensors[0].device.type != "cuda":
            return None
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn(*args)
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated() - before)

    def host_peak_bytes(self, fn: Callable[..., Any], *args: Any) -> int | None:
        """Peak bytes of host (CPU) memory allocated by torch while ``fn(*args)`` runs, above the start.

        torch keeps no allocator statistics on the CPU; its profiler records every allocation and
        free with its size, and the running sum of those events gives the peak. None for CUDA
        arguments (``peak_bytes`` reads the CUDA allocator there).
        """
        if any(isinstance(a, torch.Tensor) and a.device.type != "cpu" for a in args):
            return None
        from torch.profiler import ProfilerActivity, profile

        os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # kineto's start-up messages are not results
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn(*args)
        events = sorted(
            (e.start_ns(), e.nbytes())
            for e in prof.profiler.kineto_results.events()
            if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU
        )
        live = peak = 0
        for _, nbytes in events:
            live += nbytes
            peak = max(peak, live)
        return int(peak)

    def saved_bytes(self, fn: Callable[..., Any], *args: Any) -> int:
        """Bytes of distinct storages the forward ``fn(*args)`` saves for backward.

        Storages of the inputs and of leaf parameters (and views of them) are not counted: they
        exist whether or not a backward follows.
        """
        owned = {a.untyped_storage().data_ptr() for a in args if isinstance(a, torch.Tensor)}
        seen: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            base = t if t._base is None else t._base
            ptr = t.untyped_storage().data_ptr()
            if not (base.is_leaf and base.requires_grad) and ptr not in owned:
                seen[ptr] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fn(*args)
        return sum(seen.values())


class TorchBackend:
    """PyTorch, eager, on cpu or cuda."""

    name = "torch"
    memory = TorchMemory()
    ops: ModuleType = ops

    def devices(self) -> list[str]:
        return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]

    def device(self, kind: str) -> torch.device:
        if kind not in self.devices():
            raise DeviceUnavailable(
                f"torch: device '{kind}' is not available here; available: {', '.join(self.devices())}"
            )
        return torch.device(kind)

    def set_threads(self, n: int) -> None:
        torch.set_num_threads(max(1, n))

    def timed(self, fn: Callable[[], Any], kind: str) -> tuple[float, Any]:
        """Seconds one call of ``fn`` takes on a device of ``kind``, and what it returned.

        On cuda the time is read from CUDA events around the call, after synchronising; on the
        CPU torch runs eagerly, so wall-clock time is the call's.
        """
        if kind != "cuda":
            start = time.perf_counter()
            value = fn()
            return time.perf_counter() - start, value
        start_event, end_event = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start_event.record()
        value = fn()
        end_event.record()
        end_event.synchronize()
        return start_event.elapsed_time(end_event) / 1e3, value

    def time_once(self, fn: Callable[[], Any], kind: str) -> float:
        """Seconds one call of ``fn`` takes on a device of ``kind``, synchronised (see ``timed``)."""
        return self.timed(fn, kind)[0]

    def asarray(self, a: np.ndarray, device: torch.device, dtype: str | None = None) -> torch.Tensor:
        """Copy a NumPy array to ``device``, cast to ``dtype`` (a NumPy/torch dtype name) if given."""
        t = torch.from_numpy(np.ascontiguousarray(a)).to(device)
        return t.to(getattr(torch, dtype)) if dtype else t

    def to_numpy(self, x: torch.Tensor) -> np.ndarray:
        return x.detach().cpu().to(torch.float64 if x.is_floating_point() else x.dtype).numpy()

    def env_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "framework": "torch",
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "threads": torch.get_num_threads(),
            "cpu": cpu_name(),
        }
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            info |= {
                "cuda_device": props.name,
                "cuda_memory_bytes": props.total_memory,
                "cudnn": torch.backends.cudnn.version(),
                "driver": nvidia_driver(),
            }
        return info

    def device_name(self, kind: str) -> str:
        """Human name of the device a trial of ``kind`` runs on."""
        return torch.cuda.get_device_name(0) if kind == "cuda" else cpu_name()

    def device_memory_bytes(self, kind: str) -> int | None:
        return torch.cuda.get_device_properties(0).total_memory if kind == "cuda" else None


BACKEND = TorchBackend()
