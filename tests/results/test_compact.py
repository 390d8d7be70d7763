"""``deeperbench compact``: one file per sweep and workload, atomic when killed at any step, idempotent;
resume, read and compare see each trial once, a re-run trial overrides its compacted row (issue 15)."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

import workloads
from core.trial import Outcome, Trial
from core.workload import Record
from harness.cli import app
from harness.sweep import make_trial
from results.compact import compact
from results.store import COMPACTED, Store

ROOT = Path(__file__).resolve().parents[2]
PROBE = workloads.get("harness_probe")


def probe_trial(index: int, sweep: str = "s") -> Trial:
    return make_trial(PROBE, "torch", PROBE.Params(index=index), sweep=sweep, timeout_s=60.0)


def write(store: Store, index: int, value: float, status: str = "ok", sweep: str = "s") -> Trial:
    trial = probe_trial(index, sweep)
    records = [Record("trial_s", value, sample=0)] if status == "ok" else []
    store.write(
        trial,
        Outcome(status, records, dt.datetime.now(dt.timezone.utc), 0.1, "h", None, None if status == "ok" else "boom"),
        "r",
    )
    return trial


def values(store: Store) -> dict[int, list[float | None]]:
    """p_index -> the values stored for it (one per trial here, so a trial read twice shows two)."""
    out: dict[int, list[float | None]] = {}
    for row in store.read("s").to_pylist():
        out.setdefault(row["p_index"], []).append(row["value"])
    return out


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def compacted_then_rerun(tmp_path) -> tuple[Path, dict[int, list[float | None]]]:
    """Four trials compacted, then trial 1 re-run (now 2.0) and trial 4 new, both loose."""
    store = Store(str(tmp_path))
    for i in range(4):
        write(store, i, 1.0)
    write(store, 0, 0.0, status="failed", sweep="other")
    assert len(compact(store)) == 2
    write(store, 1, 2.0)
    write(store, 4, 1.0)
    return tmp_path, {0: [1.0], 1: [2.0], 2: [1.0], 3: [1.0], 4: [1.0]}


def test_compaction_leaves_one_file_per_sweep_and_workload_and_the_same_rows(tmp_path):
    store = Store(str(tmp_path))
    trials = [write(store, i, float(i)) for i in range(5)]
    write(store, 0, 0.0, status="failed", sweep="other")
    before = store.read().sort_by("trial_key")
    merged = compact(store)
    assert sorted((m.folder, m.trials, m.files_merged) for m in merged) == [
        ("other/harness_probe", 1, 1),
        ("s/harness_probe", 5, 5),
    ]
    assert names(tmp_path / "s" / "harness_probe") == [f"{COMPACTED}000001.parquet"]
    after = store.read().sort_by("trial_key")
    assert after.to_pylist() == before.to_pylist()
    assert store.statuses("s") == {t.key: "ok" for t in trials}
    assert store.statuses("other") == {trials[0].key: "failed"}


def test_a_rerun_trial_overrides_its_compacted_row_and_new_trials_land_loose(compacted_then_rerun):
    out, expected = compacted_then_rerun
    store = Store(str(out))
    assert values(store) == expected
    assert len(names(out / "s" / "harness_probe")) == 3  # the compacted file and two loose trial files
    compact(store)
    assert names(out / "s" / "harness_probe") == [f"{COMPACTED}000002.parquet"]
    assert values(store) == expected
    assert store.statuses("s")[probe_trial(1).key] == "ok"


def test_compaction_is_idempotent(compacted_then_rerun):
    out, expected = compacted_then_rerun
    store = Store(str(out))
    compact(store)
    listing = {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")}
    assert compact(store) == []
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")} == listing
    assert values(store) == expected


KILLER = textwrap.dedent('''
    import os, signal, sys
    import pyarrow.fs as pafs
    from results.compact import compact
    from results.store import Store

    class KillBefore(pafs.FileSystemHandler):
        """The local filesystem, but this process is SIGKILLed just before its ``at``-th change."""
        def __init__(self, fs, at):
            self.fs, self.at, self.changes = fs, at, 0
        def _change(self):
            self.changes += 1
            if self.changes == self.at:
                os.kill(os.getpid(), signal.SIGKILL)
        def get_type_name(self): return "kill-before"
        def normalize_path(self, path): return self.fs.normalize_path(path)
        def equals(self, other): return self is other
        def get_file_info(self, paths): return self.fs.get_file_info(paths)
        def get_file_info_selector(self, selector): return self.fs.get_file_info(selector)
        def open_input_stream(self, path): return self.fs.open_input_stream(path)
        def open_input_file(self, path): return self.fs.open_input_file(path)
        def create_dir(self, path, recursive): self._change(); self.fs.create_dir(path, recursive=recursive)
        def delete_dir(self, path): self._change(); self.fs.delete_dir(path)
        def delete_dir_contents(self, path, missing_dir_ok=False):
            self._change(); self.fs.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)
        def delete_root_dir_contents(self): raise NotImplementedError
        def delete_file(self, path): self._change(); self.fs.delete_file(path)
        def move(self, src, dest): self._change(); self.fs.move(src, dest)
        def copy_file(self, src, dest): self._change(); self.fs.copy_file(src, dest)
        def open_output_stream(self, path, metadata): self._change(); return self.fs.open_output_stream(path)
        def open_append_stream(self, path, metadata): self._change(); return self.fs.open_append_stream(path)

    store = Store(sys.argv[1])
    store.fs = pafs.PyFileSystem(KillBefore(store.fs, int(sys.argv[2])))
    compact(store)
''')


def test_a_compaction_killed_at_any_step_leaves_every_trial_readable_exactly_once(compacted_then_rerun, tmp_path):
    """Killed before each change it makes (write, rename, each delete), then finished by running it again."""
    out, expected = compacted_then_rerun
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    statuses = Store(str(out)).statuses("s")
    killed = 0
    for at in range(1, 20):
        folder = tmp_path / f"killed-{at}"
        shutil.copytree(out, folder)
        done = subprocess.run(
            [sys.executable, "-c", KILLER, str(folder), str(at)],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        store = Store(str(folder))
        if done.returncode == 0:  # it made fewer than ``at`` changes: every kill point is covered
            break
        assert done.returncode == -9, done.stderr
        killed += 1
        assert values(store) == expected, f"killed before change {at}"
        assert store.statuses("s") == statuses
        compact(store)
        assert values(store) == expected, f"killed before change {at}, then compacted again"
        [left] = names(folder / "s" / "harness_probe")
        assert left.startswith(COMPACTED)
    assert killed >= 5  # write, rename, two loose deletes, one compacted delete at least


def write_spec(path: Path, n: int) -> Path:
    path.write_text(f"name: s\nworkload: harness_probe\nbackends: [torch]\ngrid: {{index: {list(range(n))}}}\n")
    return path


def test_run_resumes_and_compare_counts_each_trial_once_after_compact(tmp_path):
    out = tmp_path / "out"
    spec = write_spec(tmp_path / "spec.yaml", 3)
    first = CliRunner().invoke(app, ["run", str(spec), "--out", str(out), "--executor", "local"])
    assert first.exit_code == 0, first.output
    done = CliRunner().invoke(app, ["compact", str(out)])
    assert done.exit_code == 0, done.output
    assert "3 files" in done.stdout and names(out / "s" / "harness_probe") == [f"{COMPACTED}000001.parquet"]
    assert "nothing to compact" in CliRunner().invoke(app, ["compact", str(out)]).stdout
    again = CliRunner().invoke(
        app, ["run", str(write_spec(tmp_path / "spec.yaml", 4)), "--out", str(out), "--executor", "local"]
    )
    assert again.exit_code == 0, again.output
    assert "3 already stored ok" in again.stdout
    assert len(names(out / "s" / "harness_probe")) == 2  # the new trial landed as its own file
    shown = CliRunner().invoke(app, ["compare", str(out), "--metric", "trial_s", "--format", "json"])
    assert shown.exit_code == 0, shown.output
    assert Store(str(out)).read().num_rows == 4
    assert len(json.loads(shown.stdout)["rows"]) == 4  # one per index, each from one trial


def test_compact_of_a_missing_folder_exits_2(tmp_path):
    result = CliRunner().invoke(app, ["compact", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "not a results folder" in result.output
    assert not (tmp_path / "nothing").exists()


def test_a_damaged_compacted_file_is_quarantined_so_its_trials_run_again(tmp_path):
    store = Store(str(tmp_path))
    for i in range(3):
        write(store, i, 1.0)
    write(store, 3, 1.0, sweep="other")
    compact(store)
    path = tmp_path / "s" / "harness_probe" / f"{COMPACTED}000001.parquet"
    path.write_bytes(path.read_bytes()[:200] + path.read_bytes()[-100:])
    assert store.statuses("s", quarantine=True) == {}
    assert (tmp_path / ".quarantine" / "s" / "harness_probe" / path.name).exists()
    assert store.read().num_rows == 1  # the other sweep's compacted file still reads
