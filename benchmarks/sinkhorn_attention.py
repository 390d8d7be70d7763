"""Attention forward+backward: naive softmax and Sinkhorn, blocked O(T)-memory Sinkhorn, vs fused softmax (SDPA).

Run: ``.venv/bin/python benchmarks/sinkhorn_attention.py [--T 256 1024 2048] [--device cpu]
[--backends torch jax] [--cases ...] [--max-gib 4]``. Shapes B = 8, H = 8, d = 64, float32, as in
``docs/anchors.md`` (one H200: Sinkhorn-21 is 19x SDPA's fp32 time at T = 2,048). Cases: ``sdpa``, the naive
``softmax`` and ``sinkhorn{3,21}`` (``impl="naive"``: T x T plans), ``blocked{3,21}`` (``impl="blocked"``) and
``kernel3`` (``impl="triton"`` / ``"pallas"``: on the CPU only in their interpreters, so not by default).
Every case is timed with ``backends.timer`` (warm-up excluded, synchronised, median and IQR of all samples
printed), with its ratio to SDPA's and to the naive Sinkhorn's time at the same T and iterations, measured
in the same run; memory is a separate pass of one forward + backward: peak CUDA bytes on a GPU, peak host
bytes torch allocates (profiler) on the CPU, the compiled executable's temporary + output bytes in JAX.
A naive case whose estimated footprint, (iterations + 4) B H T^2 x 4 bytes, exceeds ``--max-gib`` is skipped
and says so.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from typing import Any

import numpy as np

import backends
from backends.init import normal

CASES = {
    "sdpa": (None, None),
    "softmax": (1, "naive"),
    "sinkhorn3": (3, "naive"),
    "sinkhorn21": (21, "naive"),
    "blocked3": (3, "blocked"),
    "blocked21": (21, "blocked"),
    "kernel3": (3, "kernel"),
}
"""Case -> (Sinkhorn iterations, ``attention``'s impl); sdpa is the fused softmax, softmax the naive one."""
DEFAULT_CASES = [c for c in CASES if c != "kernel3"]
KERNELS = {"torch": "triton", "jax": "pallas"}


def _forward(ops: Any, case: str, backend: str) -> Callable[..., Any]:
    iters, impl = CASES[case]
    impl = KERNELS[backend] if impl == "kernel" else impl
    if case == "sdpa":
        return ops.fused_attention
    if case == "softmax":
        return lambda q, k, v: ops.attention(q, k, v, "softmax")[0]
    return lambda q, k, v: ops.attention(q, k, v, "sinkhorn", iters, impl=impl)[0]


def _naive_of(case: str) -> str | None:
    """The naive case with the same iterations (the blocked one's reference)."""
    iters, impl = CASES[case]
    if impl in (None, "naive"):
        return None
    return next((c for c, (i, m) in CASES.items() if i == iters and m == "naive" and c != "softmax"), None)


def _torch_step(forward: Callable[..., Any], q: Any, k: Any, v: Any) -> tuple[Callable[[], Any], tuple]:
    leaves = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]

    def step() -> Any:
        for t in leaves:
            t.grad = None
        forward(*leaves).sum().backward()
        return leaves[0].grad

    return step, tuple(leaves)


def _jax_step(forward: Callable[..., Any], q: Any, k: Any, v: Any) -> tuple[Callable[[], Any], tuple]:
    import jax

    grad = jax.jit(jax.grad(lambda q_, k_, v_: forward(q_, k_, v_).sum(), argnums=(0, 1, 2)))
    return (lambda: grad(q, k, v)), (q, k, v)


STEPS = {"torch": _torch_step, "jax": _jax_step}
"""Backend -> how to build one forward+backward call (the only framework-specific part)."""


def _memory(
    backend: Any, kind: str, forward: Callable[..., Any], step: Callable[[], Any], args: tuple
) -> tuple[str, int | None]:
    if backend.name == "jax":
        import jax

        return "compiled temp+out", backend.memory.peak_bytes(
            lambda q, k, v: jax.grad(lambda *a: forward(*a).sum(), argnums=(0, 1, 2))(q, k, v), *args
        )
    if kind == "cuda":
        return "peak", backend.memory.peak_bytes(lambda *_: step(), *args)
    return "peak host", backend.memory.host_peak_bytes(lambda *_: step(), *args)


def measure(
    backend_name: str,
    kind: str,
    t: int,
    case: str,
    *,
    b: int,
    h: int,
    d: int,
    repeats: int,
    warmup: int,
    max_gib: float,
) -> dict[str, Any]:
    """Time and memory of one case; a dict with the samples' median/IQR, or the reason it was skipped."""
    row: dict[str, Any] = {"backend": backend_name, "device": kind, "T": t, "case": case}
    iters, impl = CASES[case]
    estimate = (iters + 4) * b * h * t * t * 4 / 2**30 if impl == "naive" else 0.0
    if estimate > max_gib:
        return row | {"skipped": f"estimated {estimate:.1f} GiB > --max-gib {max_gib}"}
    backend = backends.get(backend_name)
    dev = backend.device(kind)
    q, k, v = (backend.asarray(normal(i, (b, h, t, d)), dev, "float32") for i in range(3))
    forward = _forward(backend.ops, case, backend_name)
    step, args = STEPS[backend_name](forward, q, k, v)
    samples = backends.timer(backend, step, kind=kind, warmup=warmup, repeats=repeats)
    quart = np.percentile(samples, [25, 50, 75])
    what, nbytes = _memory(backend, kind, forward, step, args)
    return row | {
        "ms_median": 1e3 * quart[1],
        "ms_q25": 1e3 * quart[0],
        "ms_q75": 1e3 * quart[2],
        "samples_ms": [1e3 * s for s in samples],
        "memory": what,
        "MiB": None if nbytes is None else nbytes / 2**20,
    }


def _find(rows: list[dict[str, Any]], row: dict[str, Any], case: str | None) -> dict[str, Any] | None:
    return next(
        (
            r
            for r in rows
            if case and r["backend"] == row["backend"] and r["T"] == row["T"] and r["case"] == case and "ms_median" in r
        ),
        None,
    )


def ratios(row: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """The row's time as a multiple of SDPA's, and its time and memory as multiples of the naive Sinkhorn's."""
    out = ""
    sdpa, naive = _find(rows, row, "sdpa"), _find(rows, row, _naive_of(row["case"]))
    if sdpa:
        out += f"  {row['ms_median'] / sdpa['ms_median']:6.1f}x sdpa"
    if naive:
        out += f"  {row['ms_median'] / naive['ms_median']:5.2f}x naive time"
        if row["MiB"] and naive["MiB"]:
            out += f", {row['MiB'] / naive['MiB']:.3f}x its memory"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--T", type=int, nargs="+", default=[256, 1024, 2048])
    parser.add_argument("--backends", nargs="+", default=["torch", "jax"], choices=sorted(STEPS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cases", nargs="+", default=DEFAULT_CASES, choices=list(CASES))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--max-gib", type=float, default=4.0)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per framework (default: all)")
    parser.add_argument("--json", default=None, help="also write every row, samples included, here")
    args = parser.parse_args()
    rows = []
    for name in args.backends:
        if args.threads:
            backends.get(name).set_threads(args.threads)
        for t in args.T:
            for case in args.cases:
                row = measure(
                    name,
                    args.device,
                    t,
                    case,
                    b=args.batch,
                    h=args.heads,
                    d=args.dim,
                    repeats=args.repeats,
                    warmup=args.warmup,
                    max_gib=args.max_gib,
                )
                rows.append(row)
                if "skipped" in row:
                    print(f"{name:5} {args.device} T={t:5} {case:10} skipped: {row['skipped']}", flush=True)
                    continue
                mem = "n/a" if row["MiB"] is None else f"{row['MiB']:9.1f} MiB ({row['memory']})"
                print(
                    f"{name:5} {args.device} T={t:5} {case:10} {row['ms_median']:10.2f} ms "
                    f"[IQR {row['ms_q25']:.2f}-{row['ms_q75']:.2f}]{ratios(row, rows)}  {mem}",
                    flush=True,
                )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {
                    "device": {n: backends.get(n).device_name(args.device) for n in args.backends},
                    "rows": rows,
                    "median_of_medians_ms": statistics.median(
                        [r["ms_median"] for r in rows if "ms_median" in r] or [0.0]
                    ),
                },
                fh,
                indent=1,
            )


if __name__ == "__main__":
    main()
