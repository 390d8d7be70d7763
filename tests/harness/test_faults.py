"""Surviving faults on a local multi-node Ray cluster: a node dies, the driver dies, nothing answers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from results.store import Store

ENV = os.environ | {"RAY_AUTH_MODE": "disabled"}
SPEC = (
    "name: f\nworkload: harness_probe\nbackends: [torch]\nresources: {cpus: 1}\n"
    "grid: {mode: sleep, sleep_s: 1.5, index: [0, 1, 2, 3, 4, 5, 6, 7]}\n"
)


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
    proc = subprocess.Popen(
        run_cmd(spec, out, c.address), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV
    )
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
    proc = subprocess.Popen(
        run_cmd(spec, resumed, c.address),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=ENV,
        start_new_session=True,
    )
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


# --- addresses that are not Ray (issue 16, item 2): exit 2 within 10 s, saying what answered ---------


@pytest.fixture
def listener(request):
    """Something that is not Ray on a local port: an HTTP server, a silent socket, or nothing (closed)."""
    kind = request.param
    if kind == "http":
        proc = subprocess.Popen(
            [sys.executable, "-m", "http.server", "0", "--bind", "127.0.0.1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        line = proc.stdout.readline()  # "Serving HTTP on 127.0.0.1 port N (...)"
        yield f"127.0.0.1:{line.split(' port ')[1].split()[0]}"
        proc.kill()
        proc.wait()
    elif kind == "silent":
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield f"127.0.0.1:{sock.getsockname()[1]}"
        sock.close()
    else:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()  # bound then closed: nothing listens there
        yield f"127.0.0.1:{port}"


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "listener, says",
    [
        ("http", "an HTTP/1 server answered"),
        ("silent", "accepted the connection but said nothing"),
        ("closed", "nothing answers at"),
    ],
    indirect=["listener"],
    ids=["http-server", "silent-listener", "closed-port"],
)
def test_an_address_that_is_not_ray_fails_within_10_s_with_exit_2(tmp_path, listener, says, record_property):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    start = time.monotonic()
    done = subprocess.run(
        run_cmd(spec, tmp_path / "out", listener), capture_output=True, text=True, env=ENV, timeout=55
    )
    took = time.monotonic() - start
    record_property("seconds_to_fail", round(took, 2))
    print(f"seconds_to_fail = {took:.2f}")  # shown with -rP
    assert done.returncode == 2, done.stderr
    assert took < 10, f"{took:.1f} s"
    assert done.stderr.count("\n") == 1 and says in done.stderr and listener in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()


# --- a damaged data page (item 3): quarantined and re-run by run; named and skipped by report/compare ---


PROBE = (
    "name: c\nworkload: harness_probe\nbackends: [torch]\nresources: {cpus: 1}\ngrid: {mode: noop, index: [0, 1, 2]}\n"
)


def local_run(spec, out, *extra, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", str(spec), "--out", str(out), "--executor", "local", *extra],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=timeout,
    )


def damage_a_page(path: Path) -> None:
    """Overwrite the header of the ``value`` column's first data page; the footer stays intact."""
    import pyarrow.parquet as pq

    meta = pq.read_metadata(path)
    names = [meta.schema.column(i).name for i in range(meta.num_columns)]
    offset = meta.row_group(0).column(names.index("value")).data_page_offset
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(b"\xff" * 24)
    pq.read_metadata(path)  # the footer still reads: only a full read finds the damage


@pytest.mark.timeout(300)
def test_a_damaged_page_is_quarantined_and_its_trial_runs_again(tmp_path, record_property):
    spec = tmp_path / "spec.yaml"
    spec.write_text(PROBE)
    out = tmp_path / "out"
    assert local_run(spec, out).returncode == 0
    files = sorted((out / "c" / "harness_probe").glob("*.parquet"))
    assert len(files) == 3
    victim = files[1]
    damage_a_page(victim)

    listed = subprocess.run(
        [sys.executable, "-m", "harness.cli", "compare", str(out), "--metric", "trial_s"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stderr
    assert victim.name in listed.stderr and "Traceback" not in listed.stderr
    assert victim.exists()  # compare reads only: it names the file and goes on
    report = subprocess.run(
        [sys.executable, "-m", "harness.cli", "report", str(out)], capture_output=True, text=True, env=ENV, timeout=240
    )
    assert report.returncode == 0, report.stderr
    assert victim.name in report.stderr and "Traceback" not in report.stderr

    start = time.monotonic()
    again = local_run(spec, out)
    took = round(time.monotonic() - start, 2)
    record_property("seconds_to_recover", took)
    print(f"seconds_to_recover = {took}")  # shown with -rP
    assert again.returncode == 0, again.stderr
    assert victim.name in again.stderr and ".quarantine" in again.stderr
    assert "1 ok" in again.stdout and "2 already stored ok" in again.stdout
    assert (out / ".quarantine" / "c" / "harness_probe" / victim.name).exists()
    rows = Store(str(out)).read().to_pylist()
    assert sorted(r["p_index"] for r in rows) == [0, 1, 2] and {r["status"] for r in rows} == {"ok"}


# --- concurrent runs and leftovers (item 10) ----------------------------------------------------------


SLEEPY = (
    "name: z\nworkload: harness_probe\nbackends: [torch]\nresources: {cpus: 1}\n"
    "grid: {mode: sleep, sleep_s: 30, index: [0, 1]}\ntimeout_s: 120\n"
)


def children_of(pid: int) -> list[int]:
    from harness.fate import descendants

    return list(descendants(pid))


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.timeout(120)
def test_a_second_run_on_a_folder_in_use_is_refused_naming_the_holder(tmp_path, record_property):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SLEEPY)
    out = tmp_path / "out"
    first = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "run", str(spec), "--out", str(out), "--executor", "local"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=ENV,
    )
    try:
        wait_for(lambda: (out / ".lock").exists() and children_of(first.pid), 60)
        start = time.monotonic()
        second = local_run(spec, out)
        took = round(time.monotonic() - start, 2)
        record_property("seconds_to_refuse", took)
        print(f"seconds_to_refuse = {took}")  # shown with -rP
        assert second.returncode == 2
        assert f"is in use by another run (pid {first.pid} on host {socket.gethostname()}" in second.stderr
        assert second.stderr.count("\n") == 1
        assert first.poll() is None  # the first run goes on
    finally:
        first.kill()
        first.wait()


@pytest.mark.timeout(120)
def test_a_killed_local_driver_takes_its_trial_along_and_its_lock_is_taken_over(tmp_path, record_property):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SLEEPY)
    out = tmp_path / "out"
    driver = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "run", str(spec), "--out", str(out), "--executor", "local"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=ENV,
    )
    wait_for(lambda: children_of(driver.pid), 60)
    time.sleep(3)  # the trial's child has started and is sleeping
    children = children_of(driver.pid)
    assert children
    os.kill(driver.pid, signal.SIGKILL)  # the driver only, not its process group
    driver.wait()
    start = time.monotonic()
    wait_for(lambda: not any(alive(c) for c in children), 10)
    took = round(time.monotonic() - start, 2)
    record_property("seconds_until_children_gone", took)
    print(f"seconds_until_children_gone = {took}")  # shown with -rP
    assert "pid" in (out / ".lock").read_text()  # the dead run's lock is still there
    quick = tmp_path / "quick.yaml"
    quick.write_text(SLEEPY.replace("sleep_s: 30", "sleep_s: 0").replace("index: [0, 1]", "index: 0"))
    again = local_run(quick, out)
    assert again.returncode == 0, again.stderr
    assert "taking over the lock of a run that is no longer running" in again.stderr
    assert not (out / ".lock").exists()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_embedded_ray_listens_on_loopback_only_and_dies_with_a_killed_driver(tmp_path, record_property):
    import psutil
    import ray  # noqa: F401 -- puts Ray's bundled psutil on the path

    spec = tmp_path / "spec.yaml"
    spec.write_text(SLEEPY)
    out = tmp_path / "out"
    driver = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "run", str(spec), "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=ENV,
    )
    try:
        wait_for(lambda: any("raylet" in psutil.Process(c).name() for c in children_of(driver.pid) if alive(c)), 120)
        time.sleep(8)  # agents and the trial's worker are up
        procs = [psutil.Process(c) for c in children_of(driver.pid) if alive(c)]
        listening = {
            (p.name(), c.laddr.ip)
            for p in procs
            for c in p.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN
        }
        assert listening, "no Ray process listens at all?"
        assert all(ip in ("127.0.0.1", "::ffff:127.0.0.1", "::1") for _, ip in listening), listening
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
        start = time.monotonic()
        wait_for(lambda: not any(alive(p.pid) for p in procs), 30)
        took = round(time.monotonic() - start, 2)
        record_property("seconds_until_ray_gone", took)
        print(f"seconds_until_ray_gone = {took}")  # shown with -rP
    finally:
        driver.kill()
        for p in psutil.Process().children(recursive=True):
            p.kill()


@pytest.mark.timeout(60)
def test_a_grpc_server_that_is_not_ray_is_named_as_such():
    """It speaks HTTP/2 like a GCS, so only the GCS call itself tells them apart."""
    from concurrent.futures import ThreadPoolExecutor

    import grpc

    from core.errors import UserError
    from harness.probe import check_ray_address

    server = grpc.server(ThreadPoolExecutor(max_workers=1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        start = time.monotonic()
        with pytest.raises(UserError, match=f"a gRPC server that is not a Ray GCS answered at '127.0.0.1:{port}'"):
            check_ray_address(f"127.0.0.1:{port}")
        assert time.monotonic() - start < 5
    finally:
        server.stop(None)
