"""``deeperbench doctor``: what each node has (versions, the devices torch and JAX see, Ray's resources)
and whether the sweeps of a spec can run there, with what to install when they cannot."""

from __future__ import annotations

import dataclasses
import functools
import platform
import socket
from collections.abc import Sequence
from importlib import metadata
from typing import Any

from core.errors import UserError
from core.trial import Trial

PACKAGES = ("torch", "jax", "jaxlib", "ray", "numpy", "pyarrow")
INSTALL = {
    ("jax", "cuda"): "install deeperbench[cuda] (JAX's CUDA 13 plugin) there",
    ("jax", "tpu"): "install deeperbench[tpu] (jax[tpu]) on a TPU VM",
    ("torch", "cuda"): "it needs an NVIDIA GPU with its driver and torch's CUDA build (the default on Linux x86-64)",
    ("torch", "tpu"): "the torch backend runs on cpu and cuda only: drop torch from the sweep's backends",
}
"""What to do where a backend sees no device of a kind."""


@dataclasses.dataclass(frozen=True)
class Node:
    """One machine: its name, package versions, devices per backend (kind -> name) and Ray resources."""

    name: str
    python: str
    versions: dict[str, str]
    devices: dict[str, dict[str, str]]
    errors: dict[str, str]
    resources: dict[str, float] = dataclasses.field(default_factory=dict)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _device_text(backend: Any, kind: str) -> str:
    """``NVIDIA H200 (139.8 GiB)``: the device's name, and its memory where the framework says."""
    memory = backend.device_memory_bytes(kind)
    return backend.device_name(kind) + (f" ({memory / 2**30:.1f} GiB)" if memory else "")


def describe_here() -> Node:
    """This process' machine: imports each backend's framework to ask it which devices it sees."""
    import backends

    devices: dict[str, dict[str, str]] = {}
    errors: dict[str, str] = {}
    for name in backends.names():
        try:
            backend = backends.get(name)
            devices[name] = {kind: _device_text(backend, kind) for kind in backend.devices()}
        except Exception as err:  # a framework that fails to import is what doctor reports, not a crash
            errors[name] = f"{type(err).__name__}: {err}".splitlines()[0]
    return Node(socket.gethostname(), platform.python_version(), {p: _version(p) for p in PACKAGES}, devices, errors)


def describe_cluster(address: str) -> list[Node]:
    """Every alive node of the Ray cluster at ``address``, each described by a tiny task pinned to it."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    ray.init(address=address, log_to_driver=False, logging_level="ERROR")
    try:
        alive = [n for n in ray.nodes() if n["Alive"]]
        task = ray.remote(num_cpus=0)(describe_here)
        refs = [
            task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote()
            for n in alive
        ]
        nodes = ray.get(refs, timeout=300)
        return [
            dataclasses.replace(
                node,
                name=f"{node.name} ({n['NodeManagerAddress']})",
                resources={k: float(v) for k, v in n["Resources"].items() if not k.startswith("node:")},
            )
            for node, n in zip(nodes, alive)
        ]
    finally:
        ray.shutdown()


@dataclasses.dataclass(frozen=True)
class Verdict:
    """Whether one sweep can run on the nodes described, and why not."""

    sweep: str
    ok: bool
    reason: str


def can_run(sweep: str, backends: Sequence[str], device: str, nodes: Sequence[Node]) -> Verdict:
    """A sweep can run when, for each of its backends, some node's framework sees its device kind.

    ``auto`` and ``cpu`` run anywhere the framework imports.
    """
    missing = []
    for backend in backends:
        kind = "cpu" if device == "auto" else device
        if any(kind in node.devices.get(backend, {}) for node in nodes):
            continue
        failed = [f"{n.name}: {n.errors[backend]}" for n in nodes if backend in n.errors]
        if failed:
            missing.append(f"{backend} does not import on {'; '.join(failed)}")
            continue
        where = ", ".join(n.name for n in nodes)
        label = {"cuda": "GPU", "tpu": "TPU"}.get(kind, kind)
        missing.append(
            f"{'JAX' if backend == 'jax' else backend} sees no {label} on {where}: "
            f"{INSTALL.get((backend, kind), 'no node has one')}"
        )
    return Verdict(sweep, not missing, "; ".join(missing) or f"{', '.join(backends)} on {device}: available")


@functools.cache
def _here() -> Node:
    return describe_here()


def require_here(trial: Trial) -> None:
    """Raise ``UserError`` (exit 2) when the trial's framework on this machine sees no device of its kind.

    Run before the first trial where the trials run on this machine; cpu, auto and workloads that use
    no backend need nothing.
    """
    import workloads
    from core.workload import uses_backend

    if trial.device in ("cpu", "auto") or not uses_backend(workloads.get(trial.workload)):
        return
    verdict = can_run(f"{trial.backend} on {trial.device}", [trial.backend], trial.device, [_here()])
    if not verdict.ok:
        raise UserError(f"device: {verdict.reason} (see: deeperbench doctor)")


def check_specs(paths: Sequence[str], nodes: Sequence[Node], device: str | None = None) -> list[Verdict]:
    """One verdict per sweep of the spec files ``paths`` (``device`` overrides each sweep's)."""
    from harness.spec import load_specs

    return [
        can_run(f"{path}: {sweep.name}", sweep.backends, device or sweep.device, nodes)
        for path in paths
        for sweep, _ in load_specs(path)
    ]


def as_rows(node: Node) -> list[tuple[str, str]]:
    """A node as (field, value) rows for a table."""
    rows = [("python", node.python)] + [(p, v) for p, v in node.versions.items()]
    for backend, kinds in node.devices.items():
        rows.append((f"{backend} devices", ", ".join(f"{k}: {name}" for k, name in kinds.items())))
    rows += [(f"{backend} error", err) for backend, err in node.errors.items()]
    if node.resources:
        rows.append(("ray resources", ", ".join(f"{k}={v:g}" for k, v in sorted(node.resources.items()))))
    return rows


__all__ = ["Node", "Verdict", "as_rows", "can_run", "check_specs", "describe_cluster", "describe_here", "require_here"]
