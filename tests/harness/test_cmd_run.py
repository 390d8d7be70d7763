"""``deeperbench run``: bad input exits 2 with one line and writes nothing; a killed run resumes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from harness.cli import app
from results.store import Store

GOOD = "name: c\nworkload: harness_probe\nbackends: [torch]\ngrid: {mode: noop}\n"


@pytest.mark.parametrize("spec, flags, expected", [
    (GOOD.replace("harness_probe", "harness_prob"), [], "did you mean 'harness_probe'"),
    (GOOD.replace("mode: noop", "mode: nop"), [], "grid.mode: Input should be 'noop'"),
    (GOOD.replace("mode: noop", "mdoe: noop"), [], "did you mean 'mode'"),
    (GOOD + "repeats: -2\n", [], "repeats: Input should be greater than 0"),
    (GOOD, ["--backend", "tensorflow"], "--backend: 'tensorflow' is not a backend of harness_probe"),
    (GOOD, ["--device", "gpu"], "--device: unknown device 'gpu'; allowed: cpu, cuda, tpu, auto"),
    (GOOD, ["--executor", "dask"], "unknown executor 'dask'; known: local, ray"),
    (GOOD, ["--executor", "local", "--address", "10.0.0.1:6379"], "--address: the local executor"),
    (None, [], "spec: file .* not found"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, spec, flags, expected):
    path = tmp_path / "spec.yaml"
    if spec is not None:
        path.write_text(spec)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(out), "--executor", "local", *flags])
    assert result.exit_code == 2, result.output
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    import re

    assert re.search(expected, lines[0]), lines[0]
    assert not out.exists()


def test_list_shows_every_workload_with_parameters_and_metrics():
    result = CliRunner().invoke(app, ["list"])
    assert result.exit_code == 0
    for text in ("device_roofline", "param  n: int", "metric flop_per_s [FLOP/s] higher is better", "harness_probe"):
        assert text in result.stdout


@pytest.mark.timeout(240)
def test_a_run_killed_half_way_resumes_without_duplicates(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: k\nworkload: harness_probe\nbackends: [torch]\n"
                    "grid: {mode: sleep, sleep_s: 0.2, index: [0, 1, 2, 3, 4, 5]}\n")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "harness.cli", "run", str(spec), "--out", str(out), "--executor", "local"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    directory = out / "k" / "harness_probe"
    deadline = time.monotonic() + 120
    def stored() -> set[str]:
        return {p.name for p in directory.glob("[!.]*.parquet")} if directory.exists() else set()

    while time.monotonic() < deadline and len(stored()) < 2:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = stored()
    assert 2 <= len(done_before) < 6
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert again.returncode == 0, again.stderr
    assert f"{len(done_before)} already stored ok" in again.stdout
    table = Store(str(out)).read()
    keys = table["trial_key"].to_pylist()
    assert len(keys) == len(set(keys)) == 6
    assert set(table["status"].to_pylist()) == {"ok"}
    assert not [p for p in directory.iterdir() if not p.name.endswith(".parquet") or p.name.startswith(".")]
