"""``deeperbench submit / status / logs`` against a real Ray head with its Jobs API."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import time

import pytest

from results.store import Store

ROOT = pathlib.Path(__file__).resolve().parents[2]
ENV = os.environ | {"RAY_AUTH_MODE": "disabled"}


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True,
                          env=ENV, timeout=timeout, cwd=ROOT)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_submitted_sweep_runs_as_a_ray_job_and_stores_its_results(tmp_path):
    from ray.cluster_utils import Cluster

    port = 8299
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": True,
                                                            "dashboard_port": port})
    try:
        address = f"http://127.0.0.1:{port}"
        out = tmp_path / "out"
        sub = cli("submit", "sweeps/harness_probe.yaml", "--address", address, "--out", str(out), "--python", sys.executable)
        assert sub.returncode == 0, sub.stderr
        job_id = sub.stdout.split()[1]
        assert f"deeperbench status {job_id}" in sub.stdout
        deadline = time.monotonic() + 240
        while (state := cli("status", job_id, "--address", address).stdout.strip()).startswith(("PENDING", "RUNNING")):
            assert time.monotonic() < deadline, state
            time.sleep(1)
        log = cli("logs", job_id, "--address", address).stdout
        assert state.startswith("SUCCEEDED"), state + log
        assert "already stored ok" in log
        rows = Store(str(out)).read().to_pylist()
        by_sweep = {(r["sweep"], r["p_mode"], r["backend"], r["p_index"]): r["status"] for r in rows}
        assert len(by_sweep) == 8 + 6
        assert sorted(s for (sweep, mode, *_), s in by_sweep.items() if sweep == "harness_probe-endings") == \
            sorted(["ok", "failed", "crashed", "oom", "skipped", "timeout"])
    finally:
        cluster.shutdown()


def test_submit_to_an_address_that_is_no_dashboard_exits_2(tmp_path):
    done = cli("submit", "sweeps/smoke.yaml", "--address", "127.0.0.1:6379")
    assert done.returncode == 2 and "--address: the Jobs API needs the dashboard's URL" in done.stderr


def test_submit_validates_the_spec_before_anything_is_sent(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: b\nworkload: nothing\nbackends: [torch]\ngrid: {x: 1}\n")
    done = cli("submit", str(bad), "--address", "http://127.0.0.1:9")
    assert done.returncode == 2 and "unknown workload 'nothing'" in done.stderr
