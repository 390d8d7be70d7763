"""CPU performance target of the relaxed top-k (issue 3): exact mask forward within 3x of ``torch.sort``.

Run: ``.venv/bin/python benchmarks/topk_cpu.py [--batch 32] [--n 100000] [--repeats 10] [--threads 2]``.
Batch 32 rows of n = 1e5 Gaussian float32 values, k = ceil(n/10), lam = 0.01. Every call is timed
with ``backends.timer`` (warm-up excluded, each sample synchronised); the table gives the median
and the interquartile range in ms, the ratio to ``torch.sort`` (descending, values and indices,
what the exact solver needs at most) measured in the same run, and the max error against the
float64 threshold solution of the same input. Forward+backward rows time ``topk_vjp``.
"""
from __future__ import annotations

import argparse
import math

import numpy as np

import backends
from backends.init import normal


def _stats(samples: list[float]) -> tuple[float, float, float]:
    q25, med, q75 = np.percentile(np.asarray(samples) * 1e3, [25, 50, 75])
    return med, q25, q75


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--lam", type=float, default=0.01)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-dykstra", action="store_true", help="leave out the (slow) Dykstra rows")
    args = parser.parse_args()
    k = math.ceil(args.n / 10)
    x_np = normal(0, (args.batch, args.n), dtype="float32")
    g_np = normal(1, (args.batch, args.n), dtype="float32")
    rows: list[tuple[str, str, list[float], float | None]] = []
    refs: dict[tuple[str, float], np.ndarray] = {}

    for name in ("torch", "jax"):
        b = backends.get(name)
        b.set_threads(args.threads)
        dev = b.device("cpu")
        ops = b.ops
        x, g = b.asarray(x_np, dev, "float32"), b.asarray(g_np, dev, "float32")
        x64 = b.asarray(x_np, dev, "float64")

        def err(y, op="mask", p=2.0, b=b, ops=ops, x64=x64) -> float:
            if (op, p) not in refs:
                fn = ops.topk_mask if op == "mask" else ops.topk_mag
                refs[(op, p)] = b.to_numpy(fn(x64, k, lam=args.lam, p=p))
            return float(np.max(np.abs(b.to_numpy(y) - refs[(op, p)])))

        def time(label, fn, error=None, b=b):
            samples = backends.timer(b, fn, kind="cpu", warmup=args.warmup, repeats=args.repeats)
            rows.append((name, label, samples, error))
            print(f"  {name:5s} {label:42s} {_stats(samples)[0]:9.1f} ms", flush=True)

        if name == "torch":
            import torch

            time("torch.sort (descending)", lambda: torch.sort(x, dim=-1, descending=True))
            time("torch.topk", lambda: torch.topk(x, k, dim=-1))
        else:
            import jax
            import jax.numpy as jnp

            jsort = jax.jit(lambda a: jnp.sort(a, axis=-1))
            jtopk = jax.jit(lambda a: jax.lax.top_k(a, k))
            time("jnp.sort", lambda: jsort(x))
            time("lax.top_k", lambda: jtopk(x))
        time("hard_topk_mask", lambda: ops.hard_topk_mask(x, k))
        for op, p in (("mask", 2.0), ("mag", 2.0), ("mask", 4 / 3), ("mag", 4 / 3)):
            fn = ops.topk_mask if op == "mask" else ops.topk_mag
            label = f"topk_{op} threshold p={'2' if p == 2 else '4/3'} fwd"
            time(label, lambda fn=fn, p=p: fn(x, k, lam=args.lam, p=p), err(fn(x, k, lam=args.lam, p=p), op, p))
        time("topk_mask threshold p=2 fwd+bwd", lambda: ops.topk_vjp(x, k, g, lam=args.lam))
        time("topk_mask pav p=2 fwd", lambda: ops.topk_mask(x, k, lam=args.lam, solver="pav"),
             err(ops.topk_mask(x, k, lam=args.lam, solver="pav")))
        time("topk_mask pav p=2 fwd+bwd", lambda: ops.topk_vjp(x, k, g, lam=args.lam, solver="pav"))
        if not args.skip_dykstra:
            kw = dict(lam=args.lam, solver="dykstra", max_iter=100, tol=0.0)
            time("topk_mask dykstra 100 it. fwd", lambda: ops.topk_mask(x, k, **kw), err(ops.topk_mask(x, k, **kw)))

    base = {name: _stats(s)[0] for name, label, s, _ in rows if label == "torch.sort (descending)"}["torch"]
    print(f"\nbatch {args.batch} x n {args.n}, k {k}, lam {args.lam}, float32, {args.threads} threads, "
          f"{backends.get('torch').env_info()['cpu']}")
    print("| backend | call | median ms | IQR ms | / torch.sort | max err vs float64 exact |")
    print("|---|---|---:|---:|---:|---:|")
    for name, label, samples, error in rows:
        med, q25, q75 = _stats(samples)
        e = "" if error is None else f"{error:.1e}"
        print(f"| {name} | {label} | {med:.1f} | {q25:.1f}-{q75:.1f} | {med / base:.2f} | {e} |")


if __name__ == "__main__":
    main()
