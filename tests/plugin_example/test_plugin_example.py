"""The example plugin (this folder) installed with pip into a target folder: ``deeperbench list`` shows it
as a plugin, and a sweep of it runs, is stored, compared and reported like a built-in workload."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from results.store import Store

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, str]:
    """The environment of a process that sees the plugin: pip installed it (no index, no download) into a target."""
    root = tmp_path_factory.mktemp("plugin")
    source = shutil.copytree(HERE, root / "src", ignore=shutil.ignore_patterns("test_*", "__pycache__", "__init__.py"))
    shutil.copy(HERE / "deeperbench_plugin_example" / "__init__.py", source / "deeperbench_plugin_example")
    target = root / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--no-build-isolation",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        timeout=240,
    )
    assert list(target.glob("deeperbench_plugin_example-*.dist-info/entry_points.txt"))
    return os.environ | {
        "PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }


def deeperbench(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        cwd=HERE.parents[1],
    )


def test_the_installed_plugin_is_listed(installed):
    listed = deeperbench(installed, "list")
    lines = listed.stdout.splitlines()
    header = next(line for line in lines if line.startswith("sort_scaling "))
    assert header.endswith("plugin: deeperbench_plugin_example.sort_scaling"), header
    assert "  param  n: int > 0 <= 10000000 = 1000" in lines
    assert "  metric sort_s [s] lower is better, median per trial" in lines
    assert "sort_scaling" not in deeperbench(os.environ | {"OMP_NUM_THREADS": "1"}, "list").stdout


@pytest.mark.timeout(300)
def test_the_installed_plugin_runs_and_is_compared(installed, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: plug\nworkload: sort_scaling\nbackends: [torch]\nrepeats: 2\ngrid: {n: [1000, 100000]}\n")
    out = tmp_path / "out"
    done = deeperbench(installed, "run", str(spec), "--out", str(out), "--executor", "local")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1].startswith("4 trials: 4 ok")
    rows = Store(str(out)).read().to_pandas()  # this process does not know the plugin: its columns stay generic
    assert set(rows["workload"]) == {"sort_scaling"} and len(rows) == 4 * 3
    shown = deeperbench(installed, "compare", str(out), "--metric", "sort_s", "--by", "n", "--format", "csv")
    assert shown.returncode == 0, shown.stderr
    header, row = shown.stdout.splitlines()[:2]
    ratio = float(row.split(",")[header.split(",").index("100000/1000")])
    assert ratio > 10  # sorting a list 100 times longer takes more than 10 times longer
