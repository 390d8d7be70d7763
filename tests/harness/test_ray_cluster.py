"""A local three-node Ray cluster: GPU trials go to the GPU nodes only, one at a time per node."""
from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections import defaultdict

import pytest

from results.store import Store


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0})
    gpu_nodes = [c.add_node(num_cpus=1, num_gpus=1) for _ in range(2)]
    c.wait_for_nodes()
    yield c, {n.node_id for n in gpu_nodes}
    c.shutdown()


@pytest.mark.timeout(240)
def test_gpu_trials_run_on_gpu_nodes_only_and_never_share_one(cluster, tmp_path):
    c, gpu_ids = cluster
    spec = tmp_path / "gpu.yaml"
    spec.write_text("name: g\nworkload: harness_probe\nbackends: [torch]\ndevice: cpu\nresources: {gpus: 1}\n"
                    "grid: {mode: sleep, sleep_s: 1.0, index: [0, 1, 2, 3, 4, 5]}\n")
    out = tmp_path / "out"
    env = os.environ | {"RAY_AUTH_MODE": "disabled"}
    done = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(spec), "--out", str(out),
                           "--address", c.address], capture_output=True, text=True, timeout=200, env=env)
    assert done.returncode == 0, done.stderr
    rows = Store(str(out)).read().to_pylist()
    assert len(rows) == 6 and {r["status"] for r in rows} == {"ok"}
    spans = defaultdict(list)
    for r in rows:
        start = r["started_at"]
        spans[json.loads(r["env"])["ray_node_id"]].append((start, start + dt.timedelta(seconds=r["duration_s"])))
    assert set(spans) == gpu_ids  # both GPU nodes used, the CPU-only head never
    for node, intervals in spans.items():
        intervals.sort()
        for (_, end), (start, _) in zip(intervals, intervals[1:]):
            assert start >= end, f"two trials overlapped on node {node}"


@pytest.mark.timeout(120)
def test_a_sweep_no_node_can_hold_fails_at_once_with_exit_2(cluster, tmp_path):
    c, _ = cluster
    spec = tmp_path / "big.yaml"
    spec.write_text("name: b\nworkload: harness_probe\nbackends: [torch]\nresources: {gpus: 2}\ngrid: {mode: noop}\n")
    done = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(spec), "--out", str(tmp_path / "out"),
                           "--address", c.address], capture_output=True, text=True, timeout=100,
                          env=os.environ | {"RAY_AUTH_MODE": "disabled"})
    assert done.returncode == 2
    assert "no node, present or that the autoscaler can add, can run a trial needing" in done.stderr and "GPU=1" in done.stderr
    assert not (tmp_path / "out").exists()

