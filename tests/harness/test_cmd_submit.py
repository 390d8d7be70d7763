"""``deeperbench submit / status / logs`` against a real Ray head with its Jobs API."""

from __future__ import annotations

import json
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
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, env=ENV, timeout=timeout, cwd=ROOT
    )


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_submitted_sweep_runs_as_a_ray_job_and_stores_its_results(tmp_path):
    from ray.cluster_utils import Cluster

    port = 8299
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": True, "dashboard_port": port}
    )
    try:
        address = f"http://127.0.0.1:{port}"
        out = tmp_path / "out"
        sub = cli(
            "submit", "sweeps/harness_probe.yaml", "--address", address, "--out", str(out), "--python", sys.executable
        )
        assert sub.returncode == 0, sub.stderr
        job_id = sub.stdout.split()[1]
        assert f"deeperbench status {job_id}" in sub.stdout
        deadline = time.monotonic() + 240
        while (state := cli("status", job_id, "--address", address).stdout.strip()).startswith(("PENDING", "RUNNING")):
            assert time.monotonic() < deadline, state
            time.sleep(1)
        log = cli("logs", job_id, "--address", address).stdout
        # the sweep fails, crashes, times out and runs out of memory on purpose: `run` exits 1 once all is stored
        assert state.startswith("FAILED") and "exit code 1" in state, state + log
        assert "14 trials: 9 ok, 1 failed, 1 oom, 1 timeout, 1 crashed, 1 skipped; 0 already stored ok" in log
        rows = Store(str(out)).read().to_pylist()
        by_sweep = {(r["sweep"], r["p_mode"], r["backend"], r["p_index"]): r["status"] for r in rows}
        assert len(by_sweep) == 8 + 6
        assert sorted(s for (sweep, mode, *_), s in by_sweep.items() if sweep == "harness_probe-endings") == sorted(
            ["ok", "failed", "crashed", "oom", "skipped", "timeout"]
        )
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


@pytest.mark.parametrize(
    "out",
    [
        "o; touch {canary} #",
        "$(touch {canary})",
        "`touch {canary}`",
        "a b'c\"d",
        "o && touch {canary}",
        "x\ntouch {canary}",
        "$HOME/../o; touch {canary}",
    ],
)
def test_the_job_entrypoint_quotes_every_argument(tmp_path, out):
    """The entrypoint is run by a shell on the cluster: run it by a real shell here, with a stand-in Python."""
    from harness.jobs import entrypoint

    canary = tmp_path / "canary"
    out = out.replace("{canary}", str(canary))
    echo = tmp_path / "argv.py"
    echo.write_text("import json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    echo.write_text(f"#!{sys.executable}\n" + echo.read_text())
    echo.chmod(0o755)
    python = str(echo)
    done = subprocess.run(
        ["sh", "-c", entrypoint(python, "sweeps/smoke.yaml", out)],
        capture_output=True,
        text=True,
        env={"HOME": str(tmp_path), "PATH": os.environ["PATH"]},
        timeout=30,
    )
    assert done.returncode == 0, done.stderr

    expected = out.replace("$HOME", str(tmp_path), 1) if out.startswith("$HOME/") else out
    assert json.loads(done.stdout) == ["-m", "harness.cli", "run", "sweeps/smoke.yaml", "--out", expected]
    assert not canary.exists()


def test_submit_to_an_address_where_nothing_listens_exits_2_within_10_s():
    start = time.monotonic()
    done = cli("submit", "sweeps/harness_probe.yaml", "--address", "http://127.0.0.1:9")
    assert done.returncode == 2 and "no Ray dashboard answers at 'http://127.0.0.1:9'" in done.stderr
    assert done.stderr.count("\n") == 1 and time.monotonic() - start < 10
