"""Every way a trial ends is recorded with its status, under both executors and both isolations."""

from __future__ import annotations

import re
import textwrap

import pytest

from harness import runner
from results.store import Store

STATUS_SPEC = """
name: ends
workload: harness_probe
backends: [torch]
isolation: {isolation}
grid:
  mode: [noop, raise, exit, oom, skip]
timeout_s: 120
---
name: hangs
workload: harness_probe
backends: [torch]
isolation: {isolation}
grid:
  mode: sleep
  sleep_s: 60
timeout_s: 4
"""

EXPECTED = {"noop": "ok", "raise": "failed", "exit": "crashed", "oom": "oom", "skip": "skipped", "sleep": "timeout"}


def run_and_read(tmp_path, executor: str, isolation: str = "actor"):
    spec = tmp_path / "spec.yaml"
    spec.write_text(textwrap.dedent(STATUS_SPEC.format(isolation=isolation)))
    summary = runner.run(str(spec), str(tmp_path / "out"), executor_name=executor)
    rows = Store(str(tmp_path / "out")).read().to_pylist()
    return summary, {r["p_mode"]: r for r in rows}


def check_statuses(summary, by_mode):
    assert {mode: row["status"] for mode, row in by_mode.items()} == EXPECTED
    assert sum(summary.counts.values()) == 6
    assert "RuntimeError: harness_probe raised on purpose" in by_mode["raise"]["error"].splitlines()[0]
    assert by_mode["raise"]["error"].startswith("harness_probe trial ")
    frames = re.findall(r'^  File ".*", line \d+, in (\w+)$', by_mode["raise"]["error"], flags=re.M)
    assert frames[0] == "execute" and frames[-1] == "run", by_mode["raise"]["error"]  # the whole traceback kept
    assert "Traceback (most recent call last)" in by_mode["oom"]["error"]
    assert "timeout_s=4" in by_mode["sleep"]["error"]
    assert "died" in by_mode["exit"]["error"]
    assert by_mode["skip"]["error"] == "harness_probe skipped on purpose"
    assert by_mode["noop"]["metric"] == "trial_s" and by_mode["noop"]["value"] < 1.0
    assert 4.0 <= by_mode["sleep"]["duration_s"] < 30.0


@pytest.mark.timeout(240)
def test_local_executor_records_every_status(tmp_path):
    check_statuses(*run_and_read(tmp_path, "local"))


@pytest.mark.timeout(240)
def test_ray_actor_executor_records_every_status(tmp_path, ray_instance):
    summary, by_mode = run_and_read(tmp_path, "ray", "actor")
    check_statuses(summary, by_mode)
    assert "ray_node_id" in by_mode["noop"]["env"]


@pytest.mark.timeout(240)
def test_ray_process_executor_records_every_status(tmp_path, ray_instance):
    check_statuses(*run_and_read(tmp_path, "ray", "process"))


@pytest.mark.timeout(240)
def test_running_again_resumes_and_force_reruns(tmp_path, ray_instance):
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: r\nworkload: harness_probe\nbackends: [torch, jax]\ngrid: {mode: [noop, raise]}\n")
    out = str(tmp_path / "out")
    first = runner.run(str(spec), out)
    assert first.counts == {"ok": 2, "failed": 2} and first.already_done == 0
    again = runner.run(str(spec), out)
    assert again.counts == {"failed": 2} and again.already_done == 2  # failed trials run again, ok ones not
    forced = runner.run(str(spec), out, force=True)
    assert sum(forced.counts.values()) == 4
    assert Store(out).read().num_rows == 4


@pytest.mark.timeout(120)
def test_sweeps_of_different_resource_shapes_in_one_file_all_run(tmp_path, ray_instance):
    """Workers kept for reuse by one sweep must not hold the CPUs the next sweep's shape needs."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: a\nworkload: harness_probe\nbackends: [torch]\nresources: {cpus: 1}\n"
        "grid: {mode: noop, index: [0, 1, 2]}\n---\n"
        "name: b\nworkload: harness_probe\nbackends: [torch]\ngrid: {mode: noop, index: [0, 1]}\n---\n"
        "name: c\nworkload: harness_probe\nbackends: [jax]\ngrid: {mode: noop, index: [0, 1]}\n"
    )
    summary = runner.run(str(spec), str(tmp_path / "out"))
    assert summary.counts == {"ok": 7}


def test_ray_log_keeps_lines_until_its_file_opens_and_verbose_leaves_ray_printing(tmp_path, capsys):
    import logging

    import ray._private.worker as ray_worker

    from harness.executors import RayLog

    original = ray_worker.print_to_stdstream
    notice = {"lines": ["A worker died"], "pid": "raylet", "is_err": False}
    log = RayLog()
    log.install()
    try:
        logging.getLogger("ray._private.authentication").warning("Token authentication is enabled")
        ray_worker.print_to_stdstream(notice, ignore_prefix=False)
        assert not list(tmp_path.iterdir())  # nothing written before the runner names the file
        path = log.open(str(tmp_path / "_logs"))
        logging.getLogger("ray").info("Started a local Ray instance.")
    finally:
        log.uninstall()
    assert ray_worker.print_to_stdstream is original
    with open(path) as file:
        text = file.read()
    assert "Token authentication is enabled" in text and "(raylet) A worker died" in text and "Started a local" in text
    assert capsys.readouterr().out == ""
    verbose = RayLog(verbose=True)
    verbose.install()
    assert not verbose.installed and verbose.open(str(tmp_path / "v")) is None and not (tmp_path / "v").exists()
    ray_worker.print_to_stdstream(notice, ignore_prefix=False)
    assert "A worker died" in capsys.readouterr().out
