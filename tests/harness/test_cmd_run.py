"""``deeperbench run`` and the CLI around it: bad input exits 2 with one line and writes nothing; a failed
trial exits 1 (0 with --allow-failures) with its full traceback stored; --dry-run starts nothing and
writes nothing; Ray's own output goes to OUT/_logs/; a killed run resumes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from harness import runner
from harness.cli import app
from results.store import Store

GOOD = "name: c\nworkload: harness_probe\nbackends: [torch]\ngrid: {mode: noop}\n"


@pytest.mark.parametrize(
    "spec, flags, expected",
    [
        (GOOD.replace("harness_probe", "harness_prob"), [], "did you mean 'harness_probe'"),
        (GOOD.replace("mode: noop", "mode: nop"), [], "grid.mode: Input should be 'noop'"),
        (GOOD.replace("mode: noop", "mdoe: noop"), [], "did you mean 'mode'"),
        (GOOD + "repeats: -2\n", [], "repeats: Input should be greater than 0"),
        (GOOD, ["--backend", "tensorflow"], "--backend: 'tensorflow' is not a backend of harness_probe"),
        (GOOD, ["--device", "gpu"], "--device: unknown device 'gpu'; allowed: cpu, cuda, tpu, auto"),
        (GOOD, ["--executor", "dask"], "unknown executor 'dask'; known: local, ray"),
        (GOOD, ["--executor", "local", "--address", "10.0.0.1:6379"], "--address: the local executor"),
        (None, [], "spec: file .* not found"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, spec, flags, expected):
    path = tmp_path / "spec.yaml"
    if spec is not None:
        path.write_text(spec)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(out), "--executor", "local", *flags])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert re.search(expected, lines[0]), lines[0]
    assert not out.exists()


def test_list_shows_every_workload_with_allowed_values_and_metrics():
    result = CliRunner().invoke(app, ["list"])
    assert result.exit_code == 0, result.output
    for text in (
        "device_roofline",
        "param  n: int",
        "metric flop_per_s [FLOP/s] higher is better",
        "harness_probe",
        "param  mode: Literal['noop', 'sleep', 'raise', 'exit', 'oom', 'skip'] = 'noop'",
        "param  index: int >= 0 = 0",
        "param  sleep_s: float >= 0 | None = None",
    ):
        assert text in result.stdout, text


def test_version_and_the_choices_in_help():
    from importlib.metadata import version

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"deeperbench {version('deeperbench')}"
    run_help = " ".join(CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "200"}).stdout.split())
    assert "local | ray" in run_help and "cpu | cuda | tpu | auto" in run_help and "--dry-run" in run_help
    compare_help = " ".join(CliRunner().invoke(app, ["compare", "--help"], env={"COLUMNS": "200"}).stdout.split())
    assert "backend | device_kind | device_name | workload | tag" in compare_help
    assert "table | markdown | csv | json" in compare_help


FAILING = "name: f\nworkload: harness_probe\nbackends: [torch]\ngrid: {mode: [noop, raise, skip]}\n"


def tree(path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(path)), p.stat().st_size) for p in path.rglob("*")) if path.exists() else []


@pytest.mark.timeout(240)
def test_a_failed_trial_exits_1_with_its_traceback_stored_and_0_with_allow_failures(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(FAILING)
    out = tmp_path / "out"
    args = ["run", str(spec), "--out", str(out), "--executor", "local"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 1, first.output
    assert first.stdout.splitlines()[-1].startswith("3 trials: 1 ok, 1 failed, 1 skipped; 0 already stored ok")
    shown = [line for line in first.stderr.splitlines() if line.startswith("failed ")]
    assert len(shown) == 1 and "RuntimeError: harness_probe raised on purpose" in shown[0]
    assert "Traceback" not in first.output and f"deeperbench report {out}" in first.stdout
    error = next(r["error"] for r in Store(str(out)).read().to_pylist() if r["status"] == "failed")
    frames = re.findall(r'^  File "(.*)", line \d+, in (\w+)$', error, flags=re.M)
    assert len(frames) >= 2 and frames[-1][1] == "run" and frames[-1][0].endswith("harness_probe.py"), error
    assert error.splitlines()[0] == shown[0].removeprefix("failed ")
    again = CliRunner().invoke(app, [*args, "--allow-failures"])
    assert again.exit_code == 0, again.output  # the failed trial ran again and failed again
    assert again.stdout.splitlines()[-1].startswith("2 trials: 1 failed, 1 skipped; 1 already stored ok")
    ok_only = tmp_path / "ok.yaml"
    ok_only.write_text(FAILING.replace("[noop, raise, skip]", "[noop, skip]"))
    assert CliRunner().invoke(app, ["run", str(ok_only), "--out", str(out), "--executor", "local"]).exit_code == 0


def test_dry_run_lists_the_trials_starts_no_ray_and_writes_nothing(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(FAILING)
    out = tmp_path / "out"
    runner.run(str(spec), str(out), executor_name="local")
    before = tree(tmp_path)
    script = (
        "import sys\nfrom harness.cli import app\n"
        f"try:\n    app(['run', {str(spec)!r}, '--out', {str(out)!r}, '--dry-run'])\n"
        "except SystemExit as e:\n    code = e.code\n"
        "print('ray imported:', 'ray' in sys.modules, 'exit', code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | {"RAY_ADDRESS": "127.0.0.1:9"},
    )
    lines = done.stdout.splitlines()
    assert lines[-1] == "ray imported: False exit 0", done.stdout + done.stderr
    assert len(lines[:-2]) == 3 and sorted(line.split()[1] for line in lines[:-2]) == ["failed", "ok", "skipped"]
    assert "mode=noop" in next(line for line in lines if line.startswith("skip "))
    assert lines[-2] == "dry run: 3 trials, 2 would run, 1 already stored ok; nothing started, nothing written"
    assert tree(tmp_path) == before
    fresh = CliRunner().invoke(app, ["run", str(spec), "--out", str(tmp_path / "new"), "--dry-run"])
    assert fresh.exit_code == 0 and "3 would run" in fresh.stdout and not (tmp_path / "new").exists()


@pytest.mark.timeout(300)
def test_ray_output_goes_to_a_log_file_under_out(tmp_path):
    """No token notice and no worker-death paragraph on the console; both in OUT/_logs/, its path printed once."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: q\nworkload: harness_probe\nbackends: [torch]\nresources: {cpus: 1}\ngrid: {mode: [noop, exit]}\n"
    )
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    env |= {"HOME": str(tmp_path), "OMP_NUM_THREADS": "1"}  # Ray's token file goes to this HOME
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", str(spec), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=280,
        env=env,
    )
    console = done.stdout + done.stderr
    assert done.returncode == 1, console
    assert "Token authentication" not in console and "A worker died" not in console, console
    assert done.stdout.splitlines()[-1].startswith("2 trials: 1 ok, 1 crashed"), console
    logs = list((out / "_logs").glob("ray-*.log"))
    assert len(logs) == 1 and console.count(str(logs[0])) == 1, console
    text = logs[0].read_text()
    assert "Token authentication is enabled" in text and "Started a local Ray instance" in text
    deadline = time.monotonic() + 5
    while "A worker died" not in text and time.monotonic() < deadline:  # the raylet's notice may come last
        time.sleep(0.2)
        text = logs[0].read_text()
    assert "A worker died" in text
    rows = Store(str(out)).read().to_pylist()
    assert {r["status"] for r in rows} == {"ok", "crashed"}  # the log folder is no part of the results
    crashed = next(r for r in rows if r["status"] == "crashed")
    assert crashed["error"].splitlines()[0].endswith("worker died 2 times; last: ActorDiedError")


def test_report_on_a_folder_without_results_exits_2_and_writes_nothing(tmp_path):
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(app, ["report", str(tmp_path / "empty")])
    assert result.exit_code == 2, result.output
    assert next(line for line in result.stderr.splitlines() if line.strip()).startswith("error: ")
    assert not list((tmp_path / "empty").iterdir())


@pytest.mark.timeout(240)
def test_a_run_killed_half_way_resumes_without_duplicates(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: k\nworkload: harness_probe\nbackends: [torch]\n"
        "grid: {mode: sleep, sleep_s: 0.2, index: [0, 1, 2, 3, 4, 5]}\n"
    )
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
