"""CPU speed of the exact relaxed top-k (issue 19): the threshold solver against ``torch.topk`` / ``lax.top_k``.

Run: ``.venv/bin/python benchmarks/topk_cpu.py [--batch 32] [--n 100000 1000000] [--threads 1]``.
Rows of Gaussian float32 values, k = ceil(n / 10), lam = 0.01. Every call is timed with
``backends.timer`` (warm-up excluded, each sample synchronised). For each backend and n the
table gives the median and interquartile range in ms and the ratio of medians to the same
backend's hard selection of the k largest (``torch.topk`` / ``lax.top_k``, values and indices)
measured in the same run, against the target (1.5x at n <= 1e5, 2x above); forward rows call
``topk_mask`` / ``topk_mag``, forward + backward rows ``topk_vjp``. The max error is against the
float64 solution of the same input by the full sort (``solve_threshold``), which shares no
selection code. The load average is printed before and after: the machine may be shared.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import platform
from functools import partial

import numpy as np

import backends
from backends.init import normal

CASES = (("mask", 2.0), ("mag", 2.0), ("mask", 4 / 3), ("mag", 4 / 3))


def _stats(samples: list[float]) -> tuple[float, float, float]:
    q25, med, q75 = np.percentile(np.asarray(samples) * 1e3, [25, 50, 75])
    return med, q25, q75


def _sorted_reference(x64: np.ndarray, k: int, lam: float, p: float, op: str) -> np.ndarray:
    """float64 output by the full sort and ``solve_threshold`` (torch), the solver before selection."""
    import torch

    solvers = importlib.import_module("backends.torch._topk_solvers")
    x = torch.from_numpy(x64)
    e = 1 if p == 2 else 3
    key = x if op == "mask" else x.abs()
    t = solvers.solve_threshold(torch.sort(-key, dim=1).values, k, lam, e, op)
    return solvers.threshold_output(x, t, lam, e, op).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--n", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--lam", type=float, default=0.01)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--backends", nargs="+", default=["torch", "jax"])
    parser.add_argument("--sort", action="store_true", help="also time the full sort (slow at n = 1e6)")
    args = parser.parse_args()
    load_before = os.getloadavg()
    rows: list[tuple[str, int, str, list[float], float | None]] = []
    for name in args.backends:
        backends.get(name).set_threads(args.threads)  # before the first use of either library
    for n in args.n:
        k = math.ceil(n / 10)
        x_np = normal(0, (args.batch, n), dtype="float32")
        g_np = normal(1, (args.batch, n), dtype="float32")
        refs = {(op, p): _sorted_reference(x_np.astype(np.float64), k, args.lam, p, op) for op, p in CASES}
        for name in args.backends:
            b = backends.get(name)
            dev = b.device("cpu")
            ops = b.ops
            x, g = b.asarray(x_np, dev, "float32"), b.asarray(g_np, dev, "float32")

            def time(label, fn, error=None, b=b, name=name, n=n):
                samples = backends.timer(b, fn, kind="cpu", warmup=args.warmup, repeats=args.repeats)
                rows.append((name, n, label, samples, error))
                med, q25, q75 = _stats(samples)
                print(f"  {name:5s} n={n:<8d} {label:34s} {med:9.1f} ms ({q25:.1f}-{q75:.1f})", flush=True)

            if name == "torch":
                import torch

                time("topk", partial(torch.topk, x, k, dim=-1))
                if args.sort:
                    time("sort", partial(torch.sort, x, dim=-1, descending=True))
            else:
                import jax
                import jax.numpy as jnp

                time("topk", partial(jax.jit(partial(jax.lax.top_k, k=k)), x))
                if args.sort:
                    time("sort", partial(jax.jit(partial(jnp.sort, axis=-1)), x))
            for op, p in CASES:
                fn = ops.topk_mask if op == "mask" else ops.topk_mag
                tag = f"topk_{op} p={'2' if p == 2 else '4/3'}"
                y = b.to_numpy(fn(x, k, lam=args.lam, p=p)).astype(np.float64)
                time(
                    f"{tag} fwd",
                    partial(fn, x, k, lam=args.lam, p=p),
                    float(np.max(np.abs(y - refs[(op, p)]))),
                )
                time(f"{tag} fwd+bwd", partial(ops.topk_vjp, x, k, g, op=op, lam=args.lam, p=p))
    load_after = os.getloadavg()

    torch_info, versions = backends.get("torch").env_info(), []
    for name in args.backends:
        info = backends.get(name).env_info()
        versions += [f"{key} {info[key]}" for key in ("torch", "jax", "jaxlib") if key in info]
    print(
        f"\nbatch {args.batch}, k = ceil(n/10), lam {args.lam}, float32, {args.threads} thread(s), "
        f"{args.warmup} warm-up + {args.repeats} timed calls each; CPU: {torch_info['cpu']} "
        f"({os.cpu_count()} logical cores), Python {platform.python_version()}, numpy {np.__version__}, "
        f"{', '.join(versions)}"
    )
    print(
        f"load average (1, 5, 15 min): before {', '.join(f'{v:.1f}' for v in load_before)}; "
        f"after {', '.join(f'{v:.1f}' for v in load_after)}"
    )
    print("| backend | n | call | median ms | IQR ms | / topk | target | max err vs float64 sort |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    base = {(name, n): _stats(s)[0] for name, n, label, s, _ in rows if label == "topk"}
    for name, n, label, samples, error in rows:
        med, q25, q75 = _stats(samples)
        ratio = med / base[(name, n)]
        target = "" if label in ("topk", "sort") else 1.5 if n <= 100_000 else 2.0
        verdict = "" if target == "" else f"{target}x {'met' if ratio <= target else 'missed'}"
        err = "" if error is None else f"{error:.1e}"
        print(f"| {name} | {n:.0e} | {label} | {med:.1f} | {q25:.1f}-{q75:.1f} | {ratio:.2f} | {verdict} | {err} |")


if __name__ == "__main__":
    main()
