"""Per-trial overhead of the Ray executor: 500 no-op trials vs 500 bare Ray tasks, same instance.

Run: ``.venv/bin/python benchmarks/harness_overhead.py [--trials 500] [--rounds 3]``. Both sides
get one CPU per task on the same embedded Ray instance, after a warm-up round that starts the
workers; the harness side includes expansion, the store's resume scan and one Parquet write per
trial. Prints each round, the medians, the per-trial overhead in ms and the ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import ray

from harness import runner


@ray.remote(num_cpus=1)
def _bare() -> None:
    return None


def bare_tasks(n: int) -> float:
    start = time.perf_counter()
    ray.get([_bare.remote() for _ in range(n)])
    return time.perf_counter() - start


def harness_trials(n: int, workdir: str, isolation: str) -> float:
    spec = os.path.join(workdir, "noop.yaml")
    with open(spec, "w") as f:
        f.write(
            f"name: overhead\nworkload: harness_probe\nbackends: [torch]\nisolation: {isolation}\n"
            f"resources: {{cpus: 1}}\ngrid: {{mode: noop, index: {list(range(n))}}}\n"
        )
    out = tempfile.mkdtemp(dir=workdir)
    start = time.perf_counter()
    summary = runner.run(spec, out)
    elapsed = time.perf_counter() - start
    if summary.counts != {"ok": n}:
        raise RuntimeError(f"expected {n} ok trials, got {dict(summary.counts)}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(include_dashboard=False, configure_logging=False, log_to_driver=False)
    cpus = int(ray.cluster_resources()["CPU"])
    with tempfile.TemporaryDirectory() as workdir:
        harness_trials(10, workdir, "actor")  # warm-up: workers start, frameworks import
        bare_tasks(50)
        bare, ours = [], []
        for r in range(args.rounds):
            bare.append(bare_tasks(args.trials))
            ours.append(harness_trials(args.trials, workdir, "actor"))
            print(f"round {r}: bare {bare[-1]:.2f} s, harness {ours[-1]:.2f} s")
    b, h = statistics.median(bare), statistics.median(ours)
    print(
        f"{args.trials} trials, {cpus} CPUs, ray {ray.__version__}: bare Ray tasks {b:.2f} s "
        f"[{min(bare):.2f}-{max(bare):.2f}], harness {h:.2f} s [{min(ours):.2f}-{max(ours):.2f}]"
    )
    print(f"per-trial overhead above bare Ray tasks: {(h - b) / args.trials * 1e3:.1f} ms; ratio {h / b:.1f}x")


if __name__ == "__main__":
    main()
