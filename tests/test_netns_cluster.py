"""Faults on a real multi-node Ray cluster of network namespaces (``tests/netns_cluster.py``).

A head, two one-CPU workers and a client node (the driver's) talk over veth links: a worker's
processes are killed, a worker's link is cut past Ray's health-check timeout, the head is killed,
and a sweep is submitted over the link. Each test counts the stored rows per trial key.
Needs root (``ip netns``); skipped with the reason elsewhere, and failed instead under ``CI=true``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from results.store import Store
from tests.netns_cluster import ROOT, NetnsCluster, ns_pids, unavailable

TRIALS = 10


def spec_text(n: int = TRIALS, sleep_s: float = 2.0) -> str:
    index = ", ".join(map(str, range(n)))
    return (
        "name: f\nworkload: harness_probe\nbackends: [torch]\nresources: {cpus: 1}\n"
        f"grid: {{mode: sleep, sleep_s: {sleep_s}, index: [{index}]}}\ntimeout_s: 120\n"
    )


@pytest.fixture(scope="module")
def cluster():
    why = unavailable()
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI runs as root with iproute2, so the namespace cluster tests must run: {why}")
        pytest.skip(why)
    c = NetnsCluster(f"dbt{os.getpid() % 1000}")
    try:
        c.up()
        yield c
    finally:
        c.down()


@pytest.fixture
def healthy(cluster):
    """The cluster with every node alive again, whatever the test before did to it."""
    alive = cluster.alive_nodes()
    if "head" not in alive:
        cluster.restart()
    for node in set(cluster.nodes) - alive - {"head"}:
        cluster.heal(node)
        cluster.restart_node(node)
    return cluster


def driver(cluster: NetnsCluster, spec: Path, out: Path) -> subprocess.Popen:
    """``deeperbench run SPEC --address HEAD`` in the client namespace: its traffic crosses the links."""
    args = [sys.executable, "-m", "harness.cli", "run", str(spec), "--out", str(out), "--address", cluster.address]
    return subprocess.Popen(
        cluster.exec_args("client", *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cluster.env(),
        cwd=ROOT,
    )


def rows_per_key(out: Path) -> Counter:
    directory = out / "f" / "harness_probe"
    if not directory.exists():
        return Counter()
    return Counter(r["trial_key"] for r in Store(str(out)).read().to_pylist())


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s:g} s")
        time.sleep(0.1)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its parent to reap it does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def busy_worker(cluster: NetnsCluster) -> str:
    """A worker node running a trial now (a process named ``ray::TrialWorker.run`` in its namespace)."""
    for node in cluster.nodes[1:-1]:
        for pid in ns_pids(cluster.namespace(node)):
            try:
                if b"TrialWorker.run" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    return node
            except OSError:
                continue
    raise AssertionError("no worker node runs a trial")


@pytest.mark.slow
def test_a_worker_node_killed_mid_sweep_loses_and_repeats_no_trial(healthy, tmp_path, record_property):
    spec, out = tmp_path / "spec.yaml", tmp_path / "out"
    spec.write_text(spec_text())
    proc = driver(healthy, spec, out)
    wait_for(lambda: sum(rows_per_key(out).values()) >= 2, 120, "two trials stored")
    victim = busy_worker(healthy)
    before = rows_per_key(out)
    kill_began = time.time()
    healthy.kill_node(victim)
    kill_ended = time.time()
    _, err = proc.communicate(timeout=180)
    after = rows_per_key(out)
    assert proc.returncode == 0, err
    assert set(before.values()) == {1} and set(after.values()) == {1} and len(after) == TRIALS
    rows = Store(str(out)).read().to_pylist()
    assert {r["status"] for r in rows} == {"ok"}
    spans = [(r["started_at"].timestamp(), r["duration_s"], json.loads(r["env"])["ray_node_id"]) for r in rows]
    across = [span for span in spans if span[0] < kill_began and span[0] + span[1] > kill_ended]
    assert len(across) <= 1, across  # the surviving node's trial; the killed node's one was not kept
    assert len({node for start, _, node in spans if start > kill_ended}) == 1  # all after it on one node
    record_property("trials_run_after_node_death", sum(start > kill_ended for start, _, _ in spans))


@pytest.mark.slow
def test_a_partitioned_worker_never_adds_a_second_row_and_the_sweep_finishes(healthy, tmp_path, record_property):
    spec, out = tmp_path / "spec.yaml", tmp_path / "out"
    spec.write_text(spec_text(sleep_s=3.0))
    proc = driver(healthy, spec, out)
    wait_for(lambda: sum(rows_per_key(out).values()) >= 2, 120, "two trials stored")
    victim = busy_worker(healthy)
    before = rows_per_key(out)
    healthy.cut(victim)
    cut_at = time.monotonic()
    wait_for(lambda: victim not in healthy.alive_nodes(), 60, f"the head declaring {victim} dead")
    record_property("seconds_until_declared_dead", round(time.monotonic() - cut_at, 1))
    print(f"seconds_until_declared_dead = {time.monotonic() - cut_at:.1f}")  # shown with -rP
    time.sleep(2)  # the cut-off node's trial (3 s) ends in the dark; its answer may come when the link returns
    healthy.heal(victim)
    _, err = proc.communicate(timeout=180)
    time.sleep(3)  # anything late from the cut-off node has had time to arrive
    after = rows_per_key(out)
    assert proc.returncode in (0, 1), err
    assert set(before.values()) == {1} and set(after.values()) == {1} and len(after) == TRIALS
    statuses = Counter(r["status"] for r in Store(str(out)).read().to_pylist())
    assert set(statuses) <= {"ok", "crashed"} and statuses["ok"] >= TRIALS - 1, statuses


@pytest.mark.slow
def test_a_killed_head_stops_the_driver_in_one_line_and_the_same_command_resumes(healthy, tmp_path, record_property):
    spec, out = tmp_path / "spec.yaml", tmp_path / "out"
    spec.write_text(spec_text(sleep_s=5.0))  # 25 s on two nodes: still running when the driver gives up
    proc = driver(healthy, spec, out)
    wait_for(lambda: sum(rows_per_key(out).values()) >= 2, 120, "two trials stored")
    killed_at = time.monotonic()
    healthy.kill_node("head")
    _, err = proc.communicate(timeout=90)
    took = time.monotonic() - killed_at
    record_property("seconds_until_driver_exits", round(took, 1))
    print(f"seconds_until_driver_exits = {took:.1f}")  # shown with -rP
    assert proc.returncode == 3, err
    assert took < 60
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and f"lost the Ray head at {healthy.address}" in lines[0], err
    before = rows_per_key(out)
    assert set(before.values()) == {1} and 2 <= len(before) < TRIALS

    healthy.restart()
    again = driver(healthy, spec, out)
    stdout, err = again.communicate(timeout=180)
    assert again.returncode == 0, err
    assert f"{TRIALS - len(before)} ok; {len(before)} already stored ok" in stdout
    after = rows_per_key(out)
    assert set(after.values()) == {1} and len(after) == TRIALS and set(before) <= set(after)


@pytest.mark.slow
def test_a_sweep_submitted_over_the_link_shows_its_status_and_logs_and_stores_its_results(healthy, tmp_path):
    out = tmp_path / "out"

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "harness.cli", *args],
            capture_output=True,
            text=True,
            env=healthy.env(),
            cwd=ROOT,
            timeout=120,
        )

    address = ["--address", healthy.dashboard]
    sub = cli("submit", "tests/netns_cluster.yaml", *address, "--out", str(out), "--python", sys.executable)
    assert sub.returncode == 0, sub.stderr
    job = sub.stdout.split()[1]
    seen, logs_while_running = set(), ""
    deadline = time.monotonic() + 180
    while (state := cli("status", job, "--address", healthy.dashboard).stdout.strip()).startswith(
        ("PENDING", "RUNNING")
    ):
        seen.add(state.split(":")[0])
        if state.startswith("RUNNING"):
            logs_while_running = logs_while_running or cli("logs", job, "--address", healthy.dashboard).stdout
        assert time.monotonic() < deadline, state
        time.sleep(0.5)
    log = cli("logs", job, "--address", healthy.dashboard).stdout
    assert state.startswith("SUCCEEDED"), state + log
    assert "RUNNING" in seen and logs_while_running
    assert "8 trials: 8 ok; 0 already stored ok" in log
    rows = Store(str(out)).read().to_pylist()
    keys = Counter(r["trial_key"] for r in rows)
    assert len(keys) == 8 and set(keys.values()) == {1} and {r["sweep"] for r in rows} == {"netns"}


@pytest.mark.slow
def test_teardown_leaves_no_process_namespace_or_link_behind(cluster):
    pids = [p for node in cluster.nodes for p in ns_pids(cluster.namespace(node))]
    assert pids  # the cluster was up
    cluster.down()
    assert cluster.leftovers() == []
    assert not [p for p in pids if alive(p)]
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert not [line for line in listed.splitlines() if line.startswith(f"{cluster.name}-")]


def test_a_second_answer_for_a_trial_already_stored_is_dropped():
    """The guard behind the partition test: the driver hands each trial key to ``on_done`` once."""
    import datetime as dt

    import workloads
    from harness.executors.ray_executor import _Running, _Sweep
    from harness.spec import Sweep
    from harness.sweep import expand
    from harness.trial import unfinished

    sweep = Sweep(name="g", workload="harness_probe", backends=["torch"], grid={"mode": "noop", "index": [0, 1]})
    first, second = expand(sweep, workloads.get("harness_probe"), device="cpu")
    stored: list[str] = []
    s = _Sweep(first, iter([second]), 2, lambda trial, outcome: stored.append(trial.key), idle=[])
    now = dt.datetime.now(dt.timezone.utc)
    late, retry, other = _Running(first, 0, 0.0, now), _Running(first, 1, 0.0, now), _Running(second, 0, 0.0, now)
    s.record(retry, unfinished(first, "ok", "", 0.0, now))
    s.record(late, unfinished(first, "ok", "", 0.0, now))
    s.finish(late, "crashed", "worker died")
    s.record(other, unfinished(second, "ok", "", 0.0, now))
    assert stored == [first.key, second.key]
