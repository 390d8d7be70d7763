"""The torch backend: devices, synchronised timing, memory meters, seeding, environment."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
import torch

from .._protocol import DeviceUnavailable, wall_seconds
from ..host import cpu_name, nvidia_driver
from . import ops


class TorchMemory:
    """Peak CUDA bytes of a call, and bytes saved for backward through ``saved_tensors_hooks``."""

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

    def time_once(self, fn: Callable[[], Any], kind: str) -> float:
        if kind != "cuda":
            return wall_seconds(fn, lambda _: None)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3

    def seed(self, n: int) -> torch.Generator:
        """A fresh generator seeded with ``n`` (no global RNG state is touched)."""
        return torch.Generator().manual_seed(n)

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
