"""The Ray executor on a real multi-node cluster of network namespaces (``tests/netns_cluster.py``; root).

Run: ``sudo .venv/bin/python benchmarks/netns_cluster.py [--repeats 3]``. Measures, with the driver in
the client namespace (its traffic crosses the veth links):

1. recovery: one 10-s trial; the worker node running it is killed (``kill``) or its link cut past
   Ray's health-check timeout (``cut``); the time from that moment to the trial's start on the other
   node (its stored ``started_at``), worker start-up there included;
2. per-trial overhead: 300 no-op trials on two one-CPU slots, from the first trial's start to the last
   one's end (start-up excluded), over the link and on the embedded single-machine instance, interleaved;
3. head loss: the head killed mid-sweep; the time until the driver's one-line error, and until it exits;
4. scale-out: 64 trials that sleep 0.5 s on one CPU, on clusters of 1 and 2 one-CPU worker namespaces:
   wall of ``deeperbench run`` (ideal 32 and 16 s) and span from the first trial's start to the last end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results.store import Store  # noqa: E402
from tests.netns_cluster import NetnsCluster, ns_pids  # noqa: E402

OVERHEAD_TRIALS = 300


def spec(workdir: Path, name: str, trials: int, mode: str = "sleep", sleep_s: float = 0.5) -> Path:
    path = workdir / f"{name}.yaml"
    sleep = f", sleep_s: {sleep_s}" if mode == "sleep" else ""
    path.write_text(
        f"name: {name}\nworkload: harness_probe\nbackends: [torch]\nresources: {{cpus: 1}}\n"
        f"grid: {{mode: {mode}{sleep}, index: {list(range(trials))}}}\ntimeout_s: 600\n"
    )
    return path


def run(cluster: NetnsCluster | None, path: Path, out: Path, wait: bool = True) -> subprocess.Popen | float:
    """``deeperbench run`` in the client namespace (embedded instance when ``cluster`` is None); wall seconds."""
    args = [sys.executable, "-m", "harness.cli", "run", str(path), "--out", str(out)]
    if cluster is not None:
        args = cluster.exec_args("client", *args, "--address", cluster.address)
    env = cluster.env() if cluster else None
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    if not wait:
        return proc
    _, err = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(err[-2000:])
    return time.perf_counter() - start


def busy_worker(cluster: NetnsCluster, timeout_s: float = 120) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for node in cluster.nodes[1:-1]:
            for pid in ns_pids(cluster.namespace(node)):
                try:
                    if b"TrialWorker.run" in Path(f"/proc/{pid}/cmdline").read_bytes():
                        return node
                except OSError:
                    continue
        time.sleep(0.05)
    raise TimeoutError("no worker node started the trial")


def recovery(cluster: NetnsCluster, workdir: Path, fault: str, i: int) -> float:
    out = workdir / f"rec-{fault}-{i}"
    proc = run(cluster, spec(workdir, "rec", 1, sleep_s=10.0), out, wait=False)
    victim = busy_worker(cluster)
    time.sleep(1.0)
    at = time.time()
    if fault == "kill":
        cluster.kill_node(victim)
    else:
        cluster.cut(victim)
        while victim in cluster.alive_nodes():
            time.sleep(0.2)
        cluster.heal(victim)
    _, err = proc.communicate(timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(err[-2000:])
    (row,) = Store(str(out)).read().to_pylist()
    cluster.restart_node(victim)
    return row["started_at"].timestamp() - at


def head_loss(cluster: NetnsCluster, workdir: Path, i: int) -> tuple[float, float]:
    """Seconds from the head's kill to the driver's ``error:`` line, and to its exit (status 3)."""
    out = workdir / f"head{i}"
    proc = run(cluster, spec(workdir, "head", 12, sleep_s=5.0), out, wait=False)
    busy_worker(cluster)
    time.sleep(3.0)
    at = time.monotonic()
    cluster.kill_node("head")
    said = None
    for line in proc.stderr:
        if line.startswith("error:"):
            said = time.monotonic() - at
    proc.wait(timeout=120)
    exited = time.monotonic() - at
    if proc.returncode != 3 or said is None:
        raise RuntimeError(f"expected exit status 3 and an error line, got {proc.returncode}")
    cluster.restart()
    return said, exited


def span(out: Path) -> float:
    """Seconds from the first trial's start to the last one's end (worker start-up excluded)."""
    import pandas as pd

    df = Store(str(out)).read().to_pandas()
    ends = df["started_at"] + df["duration_s"].map(lambda s: pd.Timedelta(seconds=s))
    return (ends.max() - df["started_at"].min()).total_seconds()


def scale(workers: int, workdir: Path) -> tuple[float, float]:
    cluster = NetnsCluster(f"dbs{workers}", workers=workers).up()
    try:
        out = workdir / f"scale{workers}"
        wall = run(cluster, spec(workdir, "scale", 64), out)
        return wall, span(out)
    finally:
        cluster.down()


def show(name: str, values: list[float]) -> str:
    return f"{name}: median {statistics.median(values):.2f} s [{min(values):.2f}-{max(values):.2f}] over {len(values)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=["recovery", "overhead", "head", "scale"], action="append")
    args = parser.parse_args()
    parts = args.only or ["recovery", "overhead", "head", "scale"]
    print(f"load average before: {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="netns-bench-") as tmp:
        workdir = Path(tmp)
        if {"recovery", "overhead", "head"} & set(parts):
            cluster = NetnsCluster("dbb", workers=2).up()
            try:
                if "recovery" in parts:
                    for fault in ("kill", "cut"):
                        took = [recovery(cluster, workdir, fault, i) for i in range(args.repeats)]
                        print(show(f"recovery after {fault}: fault to the trial's start on the other node", took))
                if "overhead" in parts:
                    per_trial: dict[str, list[float]] = {"link": [], "embedded": []}
                    for i in range(args.repeats):
                        for where, c in (("link", cluster), ("embedded", None)):
                            out = workdir / f"o{i}{where}"
                            run(c, spec(workdir, f"o{i}{where}", OVERHEAD_TRIALS, "noop"), out)
                            per_trial[where].append(span(out) / OVERHEAD_TRIALS * 1000)
                    for where, ms in per_trial.items():
                        print(show(f"span per no-op trial, {where} (ms, 2 slots)", ms).replace(" s [", " ms ["))
                    ratio = [a / b for a, b in zip(per_trial["link"], per_trial["embedded"])]
                    print(f"link / embedded per round: {', '.join(f'{r:.2f}' for r in ratio)}", flush=True)
                if "head" in parts:
                    lost = [head_loss(cluster, workdir, i) for i in range(args.repeats)]
                    print(show("head killed: until the driver's one line", [said for said, _ in lost]))
                    print(show("head killed: until the driver has exited", [gone for _, gone in lost]), flush=True)
            finally:
                cluster.down()
        if "scale" in parts:
            for workers in (1, 2):
                wall, spread = scale(workers, workdir)
                ideal = 32.0 / workers
                print(
                    f"64 x 0.5 s on {workers} worker namespace(s): wall {wall:.1f} s (efficiency {ideal / wall:.2f}), "
                    f"first start to last end {spread:.1f} s ({ideal / spread:.2f})",
                    flush=True,
                )
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
