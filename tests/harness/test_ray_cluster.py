"""A local three-node Ray cluster: GPU trials go to the GPU nodes only, one at a time per node."""

from __future__ import annotations

import datetime as dt
import itertools
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
    spec.write_text(
        "name: g\nworkload: harness_probe\nbackends: [torch]\ndevice: cpu\nresources: {gpus: 1}\n"
        "grid: {mode: sleep, sleep_s: 1.0, index: [0, 1, 2, 3, 4, 5]}\n"
    )
    out = tmp_path / "out"
    env = os.environ | {"RAY_AUTH_MODE": "disabled"}
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", str(spec), "--out", str(out), "--address", c.address],
        capture_output=True,
        text=True,
        timeout=200,
        env=env,
    )
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
        for (_, end), (start, _) in itertools.pairwise(intervals):
            assert start >= end, f"two trials overlapped on node {node}"


@pytest.mark.timeout(120)
def test_a_sweep_no_node_can_hold_fails_at_once_with_exit_2(cluster, tmp_path):
    c, _ = cluster
    spec = tmp_path / "big.yaml"
    spec.write_text("name: b\nworkload: harness_probe\nbackends: [torch]\nresources: {gpus: 2}\ngrid: {mode: noop}\n")
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", str(spec), "--out", str(tmp_path / "out"), "--address", c.address],
        capture_output=True,
        text=True,
        timeout=100,
        env=os.environ | {"RAY_AUTH_MODE": "disabled"},
    )
    assert done.returncode == 2
    assert (
        "no node, present or that the autoscaler can add, can run a trial needing" in done.stderr
        and "GPU=1" in done.stderr
    )
    assert not (tmp_path / "out").exists()


AUTOSCALED = """
import json, sys
import ray
from ray._raylet import GCS_AUTOSCALER_CLUSTER_CONFIG_KEY as KEY, GCS_AUTOSCALER_STATE_NAMESPACE as NS
from ray.core.generated import autoscaler_pb2
from ray.experimental.internal_kv import _internal_kv_del, _internal_kv_put
import workloads
from core.errors import UserError
from harness.executors.ray_executor import RayExecutor
from harness.spec import Sweep
from harness.sweep import expand

executor = RayExecutor(sys.argv[1])
config = autoscaler_pb2.ClusterConfig()
group = config.node_group_configs.add(name="gpu8", min_count=0, max_count=2)
group.resources.update({"CPU": 16, "GPU": 8})
_internal_kv_put(KEY.encode(), config.SerializeToString(), namespace=NS.encode())
out = {}
try:
    for gpus in (4, 16):
        trial = expand(Sweep(name="a", workload="harness_probe", backends=["torch"], resources={"gpus": gpus},
                             grid={"mode": "noop"}), workloads.get("harness_probe"), device="cpu")[0]
        try:
            executor.check(trial)
            out[gpus] = executor._slots(trial)
        except UserError as err:
            out[gpus] = str(err)
finally:
    _internal_kv_del(KEY.encode(), namespace=NS.encode())
    executor.close()
print(json.dumps(out))
"""


@pytest.mark.timeout(120)
def test_nodes_the_autoscaler_can_add_count_and_beyond_them_a_sweep_fails(cluster):
    """The node groups an autoscaler reports to the GCS (here written as it writes them) count as slots."""
    c, _ = cluster
    done = subprocess.run(
        [sys.executable, "-c", AUTOSCALED, c.address],
        capture_output=True,
        text=True,
        timeout=100,
        env=os.environ | {"RAY_AUTH_MODE": "disabled"},
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["4"] == 4  # no present node has 4 GPUs; two 8-GPU nodes the autoscaler may add hold 2 each
    assert out["16"].startswith("resources: no node, present or that the autoscaler can add") and "GPU=8" in out["16"]
