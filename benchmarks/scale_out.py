"""Scale-out of the Ray executor: 64 trials that each sleep 0.5 s on one CPU, on local clusters of
1, 2 and 4 one-CPU nodes (``ray.cluster_utils.Cluster``, a CPU-less head).

Run: ``.venv/bin/python benchmarks/scale_out.py``. Ideal wall times are 32, 16 and 8 s. Prints,
per cluster size, the wall time of ``deeperbench run`` (worker start-up included) and the span from
the first trial's start to the last one's end (start-up excluded), with the efficiency
ideal / measured of each.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from harness import runner
from results.store import Store


def one_size(nodes: int, trials: int, sleep_s: float, workdir: str) -> tuple[float, float]:
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for _ in range(nodes):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        spec = os.path.join(workdir, f"scale{nodes}.yaml")
        with open(spec, "w") as f:
            f.write(
                f"name: scale\nworkload: harness_probe\nbackends: [torch]\nresources: {{cpus: 1}}\n"
                f"grid: {{mode: sleep, sleep_s: {sleep_s}, index: {list(range(trials))}}}\n"
            )
        out = tempfile.mkdtemp(dir=workdir)
        start = time.perf_counter()
        summary = runner.run(spec, out, address=cluster.address)
        wall = time.perf_counter() - start
        if summary.counts != {"ok": trials}:
            raise RuntimeError(f"expected {trials} ok trials, got {dict(summary.counts)}")
        df = Store(out).read().to_pandas()
        ends = df["started_at"] + df["duration_s"].map(lambda s: __import__("pandas").Timedelta(seconds=s))
        span = (ends.max() - df["started_at"].min()).total_seconds()
        return wall, span
    finally:
        cluster.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--sleep-s", type=float, default=0.5)
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    with tempfile.TemporaryDirectory() as workdir:
        for n in args.nodes:
            ideal = args.trials * args.sleep_s / n
            wall, span = one_size(n, args.trials, args.sleep_s, workdir)
            print(
                f"{n} node(s): ideal {ideal:.1f} s; wall {wall:.1f} s (efficiency {ideal / wall:.2f}); "
                f"first start to last end {span:.1f} s (efficiency {ideal / span:.2f})",
                flush=True,
            )


if __name__ == "__main__":
    main()
