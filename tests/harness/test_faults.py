"""Surviving faults on a local multi-node Ray cluster: a node dies, the driver dies, nothing answers."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from results.store import Store

ENV = os.environ | {"RAY_AUTH_MODE": "disabled"}
SPEC = ("name: f\nworkload: harness_probe\nbackends: [torch]\nresources: {cpus: 1}\n"
        "grid: {mode: sleep, sleep_s: 1.5, index: [0, 1, 2, 3, 4, 5, 6, 7]}\n")


@pytest.fixture
def cluster():
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    workers = [c.add_node(num_cpus=1) for _ in range(2)]
    c.wait_for_nodes()
    yield c, workers
    c.shutdown()


def run_cmd(spec, out, address) -> list[str]:
    return [sys.executable, "-m", "harness.cli", "run", str(spec), "--out", str(out), "--address", address]


def stored(out) -> int:
    directory = out / "f" / "harness_probe"
    return len(list(directory.glob("[!.]*.parquet"))) if directory.exists() else 0


def wait_for(predicate, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.05)


def identity(out) -> set[tuple]:
    rows = Store(str(out)).read().to_pylist()
    return {(r["trial_key"], r["metric"], r["step"], r["sample"], r["tag"], r["status"]) for r in rows}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_worker_node_killed_mid_sweep_loses_no_trial(cluster, tmp_path):
    c, workers = cluster
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    out = tmp_path / "out"
    proc = subprocess.Popen(run_cmd(spec, out, c.address), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=ENV)
    wait_for(lambda: stored(out) >= 2, 120)
    c.remove_node(workers[0], allow_graceful=False)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    rows = Store(str(out)).read().to_pylist()
    keys = [r["trial_key"] for r in rows]
    assert len(keys) == len(set(keys)) == 8
    assert {r["status"] for r in rows} == {"ok"}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_killed_driver_resumes_to_the_same_results_as_an_uninterrupted_run(cluster, tmp_path):
    c, _ = cluster
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    done = subprocess.run(run_cmd(spec, whole, c.address), capture_output=True, text=True, env=ENV, timeout=240)
    assert done.returncode == 0, done.stderr
    proc = subprocess.Popen(run_cmd(spec, resumed, c.address), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=ENV, start_new_session=True)
    wait_for(lambda: stored(resumed) >= 2, 120)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = stored(resumed)
    assert before < 8
    again = subprocess.run(run_cmd(spec, resumed, c.address), capture_output=True, text=True, env=ENV, timeout=240)
    assert again.returncode == 0, again.stderr
    assert f"{before} already stored ok" in again.stdout
    rows = Store(str(resumed)).read().to_pylist()
    assert len({r["trial_key"] for r in rows}) == len(rows) == 8
    assert identity(resumed) == identity(whole)


@pytest.mark.timeout(60)
def test_an_address_where_nothing_listens_fails_within_30_s_with_exit_2(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    start = time.monotonic()
    done = subprocess.run(run_cmd(spec, tmp_path / "out", "127.0.0.1:9"), capture_output=True, text=True,
                          env=ENV, timeout=55)
    assert time.monotonic() - start < 30
    assert done.returncode == 2
    assert "--address: nothing answers at '127.0.0.1:9'" in done.stderr
    assert not (tmp_path / "out").exists()
