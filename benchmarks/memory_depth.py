"""Activation memory and bytes saved for the backward vs depth, per model (thesis Fig. 4.2).

Run: ``.venv/bin/python benchmarks/memory_depth.py [--width 128] [--batch 128] [--depths 10 100 1000]
[--models resnet checkpoint momentum_reversible] [--backends torch jax] [--untied] [--time] [--json PATH]``.

For each backend, model and depth it builds the network (tied weights unless ``--untied``,
float32, gamma = 1 - 1/(50 depth)) and measures, as the ``memory_depth`` workload does:
``saved_bytes`` (torch: saved_tensors_hooks; JAX: the VJP's residuals), ``peak_bytes`` of one
forward+backward (CUDA allocator; torch on the CPU: profiler allocation events; JAX: compiled
temp + output bytes, compile only) and ``activation_bytes`` = peak minus the gradients' bytes.
``--time`` adds the median of 3 timed forward+backward steps (after one warm-up).

It prints one row per measurement, then per backend and model the slope in bytes per layer and
the ratio of activation bytes at the deepest and the shallowest depth. Issue 4's targets:
momentum_reversible's activation bytes at depth 1,000 within 1.1x of depth 10 (d = 500, batch
500), and its step time no slower than checkpointing's.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics

import numpy as np

import backends
from backends.init import normal

_ITEMSIZE = {"float32": 4, "float64": 8}


def _leaves(tree) -> list:
    if isinstance(tree, dict):
        return [a for v in tree.values() for a in _leaves(v)]
    if isinstance(tree, (list, tuple)):
        return [a for v in tree for a in _leaves(v)]
    return [tree]


def measure(
    name: str, model: str, depth: int, width: int, batch: int, tied: bool, dtype: str, timed: bool, kind: str
) -> dict:
    """One row: saved, peak and activation bytes (and the step time) of one network."""
    be = backends.get(name)
    dev = be.device(kind)
    net = be.ops.residual_net(model, depth=depth, width=width, tied=tied, dtype=dtype, seed=0, device=dev)
    x = be.asarray(normal(1, (batch, width)), dev, dtype)
    g = be.asarray(normal(2, (batch, width)), dev, dtype)
    forward, step, params = be.ops.residual_functional(net)
    row = {
        "backend": name,
        "model": model,
        "depth": depth,
        "width": width,
        "batch": batch,
        "tied": tied,
        "saved_bytes": be.memory.saved_bytes(forward, params, x),
    }
    peak = be.memory.peak_bytes(step, params, x, g)
    if peak is None:
        peak = be.ops.host_peak_bytes(step, params, x, g)
    grads = sum(math.prod(a.shape) for a in _leaves(step(params, x, g))) * _ITEMSIZE[dtype]
    row |= {"peak_bytes": peak, "activation_bytes": None if peak is None else peak - grads, "grad_bytes": grads}
    if timed:
        row["time_s"] = statistics.median(
            backends.timer(be, lambda: step(params, x, g), kind=kind, warmup=1, repeats=3)
        )
    return row


def summarize(rows: list[dict]) -> list[str]:
    """Per backend and model: bytes per layer (least squares) and deepest / shallowest activation bytes."""
    lines = []
    for key in sorted({(r["backend"], r["model"], r["tied"]) for r in rows}):
        grp = sorted((r for r in rows if (r["backend"], r["model"], r["tied"]) == key), key=lambda r: r["depth"])
        if len(grp) < 2:
            continue
        depths = np.array([r["depth"] for r in grp], dtype=float)
        parts = [f"{key[0]:5s} {key[1]:20s} tied={key[2]!s:5s}"]
        for metric in ("activation_bytes", "saved_bytes"):
            values = np.array([r[metric] for r in grp], dtype=float)
            slope = np.polyfit(depths, values, 1)[0]
            parts.append(
                f"{metric} {slope / 2**10:9.2f} KiB/layer, x{values[-1] / values[0]:.3f} from depth "
                f"{int(depths[0])} to {int(depths[-1])}"
            )
        if "time_s" in grp[0]:
            parts.append(f"time at depth {int(depths[-1])}: {grp[-1]['time_s'] * 1e3:.1f} ms")
        lines.append("; ".join(parts))
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--depths", type=int, nargs="+", default=[10, 100, 1000])
    ap.add_argument(
        "--models", nargs="+", default=["resnet", "checkpoint", "momentum_reversible", "revnet", "adjoint_euler"]
    )
    ap.add_argument("--backends", nargs="+", default=["torch", "jax"])
    ap.add_argument("--untied", action="store_true", help="independent weights per layer (default: tied)")
    ap.add_argument("--dtype", default="float32", choices=sorted(_ITEMSIZE))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--time", action="store_true", help="also time one forward+backward (median of 3)")
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args()
    rows = []
    print(
        f"{'backend':7s} {'model':20s} {'depth':>5s} {'saved MiB':>10s} {'peak MiB':>10s} {'activation MiB':>15s}"
        + ("  time ms" if args.time else "")
    )
    for name in args.backends:
        for model in args.models:
            for depth in args.depths:
                r = measure(
                    name, model, depth, args.width, args.batch, not args.untied, args.dtype, args.time, args.device
                )
                rows.append(r)
                mib = lambda v: "-" if v is None else f"{v / 2**20:.3f}"
                print(
                    f"{name:7s} {model:20s} {depth:5d} {mib(r['saved_bytes']):>10s} {mib(r['peak_bytes']):>10s} "
                    f"{mib(r['activation_bytes']):>15s}" + (f"  {r['time_s'] * 1e3:7.1f}" if args.time else ""),
                    flush=True,
                )
    print()
    print("\n".join(summarize(rows)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
