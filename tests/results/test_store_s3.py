"""Results on object storage: ``--out s3://bucket/prefix`` against a real S3 server (moto) on 127.0.0.1.

The slow test drives the ``deeperbench`` command as a user would (run, resume, quarantine, report,
compare, compact, resume again) and reads the prefix back with pandas and pyarrow through pyarrow's
S3 filesystem; the fast ones check the run lock a remote store gets (``harness.lock``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pytest

from core.errors import UserError
from harness import lock as lock_module
from harness.lock import LOCK_NAME, RunLock

DEEPERBENCH = str(Path(sys.executable).with_name("deeperbench"))
RESULT_NAMES = (".parquet", "_report.html", "_common_metadata", LOCK_NAME, ".part")
"""What a results folder holds: none of these may appear in a local folder when ``--out`` is s3://."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class S3:
    """A moto S3 server on 127.0.0.1: its endpoint, the environment that points the AWS SDK at it."""

    endpoint: str
    env: dict[str, str]

    def fs(self, *, admin: bool = False) -> pafs.S3FileSystem:
        return pafs.S3FileSystem(endpoint_override=self.endpoint, region="us-east-1", allow_bucket_creation=admin)

    def bucket(self) -> str:
        """A new, empty bucket."""
        name = f"b-{uuid.uuid4().hex[:12]}"
        self.fs(admin=True).create_dir(name)
        return name

    def keys(self, prefix: str) -> list[str]:
        infos = self.fs().get_file_info(pafs.FileSelector(prefix, recursive=True, allow_not_found=True))
        return sorted(i.path for i in infos if i.type == pafs.FileType.File)


AWS_ENV = ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION")


@pytest.fixture(scope="module")
def s3() -> Iterator[S3]:
    """A real S3 server (moto's) on a free port of 127.0.0.1, and this process' AWS environment pointing at it."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    with pytest.MonkeyPatch.context() as mp:
        for name in AWS_ENV:
            mp.delenv(name, raising=False)
        for name, value in env.items():
            mp.setenv(name, value)
        yield S3(env["AWS_ENDPOINT_URL"], env)
    server.stop()


def result_files(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*") if p.is_file() and p.name.endswith(RESULT_NAMES))


@pytest.mark.slow
def test_a_sweep_runs_resumes_reports_and_compacts_on_s3_writing_nothing_locally(s3, tmp_path):
    bucket = s3.bucket()
    out, prefix = f"s3://{bucket}/run", f"{bucket}/run"
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: s3probe\nworkload: harness_probe\nbackends: [torch, jax]\ngrid: {index: [0, 1, 2]}\n")
    cwd, tmp = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir()
    tmp.mkdir()
    env = os.environ | s3.env | {"TMPDIR": str(tmp), "OMP_NUM_THREADS": "1"}

    def deeperbench(*args: str) -> str:
        done = subprocess.run(
            [DEEPERBENCH, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
        )
        assert done.returncode == 0, f"{args}: exit {done.returncode}\n{done.stdout}\n{done.stderr[-3000:]}"
        return done.stdout

    run = ("run", str(spec), "--out", out, "--executor", "local")
    assert "6 trials: 6 ok; 0 already stored ok" in deeperbench(*run)
    loose = [k for k in s3.keys(prefix) if k.endswith(".parquet")]
    assert len(loose) == 6 and all(k.startswith(f"{prefix}/s3probe/harness_probe/") for k in loose)
    assert f"{prefix}/_common_metadata" in s3.keys(prefix)
    assert "0 trials: no trial run; 6 already stored ok" in deeperbench(*run)  # resumed: nothing new runs

    with s3.fs().open_output_stream(loose[0]) as f:  # a trial file damaged: moved aside, its trial runs again
        f.write(b"not parquet")
    assert "1 trial: 1 ok; 5 already stored ok" in deeperbench(*run)
    assert s3.keys(f"{prefix}/.quarantine") == [f"{prefix}/.quarantine/{loose[0][len(prefix) + 1 :]}"]

    assert f"{out}/_report.html" in deeperbench("report", out)
    with s3.fs().open_input_stream(f"{prefix}/_report.html") as f:
        assert b"deeperbench report" in f.read()
    local_report = tmp_path / "report.html"
    deeperbench("report", out, "--html", str(local_report))
    assert local_report.stat().st_size > 10_000

    compared = json.loads(deeperbench("compare", out, "--metric", "trial_s", "--format", "json"))
    assert "torch" in json.dumps(compared) and "jax" in json.dumps(compared)

    assert f"6 files -> {out}/s3probe/harness_probe/compacted-000001.parquet" in deeperbench("compact", out)
    parquet = [k for k in s3.keys(prefix) if k.endswith(".parquet") and "/.quarantine/" not in k]
    assert parquet == [f"{prefix}/s3probe/harness_probe/compacted-000001.parquet"]
    assert "nothing to compact" in deeperbench("compact", out)
    assert "0 trials: no trial run; 6 already stored ok" in deeperbench(*run)  # resumes from the compacted file

    from harness.runner import dry_run
    from results.store import Store

    planned = {p.trial.key for p in dry_run(str(spec), out)}
    assert len(planned) == 6
    fs = s3.fs()
    for name, table in {
        "pandas": pd.read_parquet(out),  # pyarrow's S3 filesystem, pointed at the server by AWS_ENDPOINT_URL
        "pyarrow": ds.dataset(prefix, filesystem=fs).to_table().to_pandas(),
        "store": Store(out).read().to_pandas(),
    }.items():
        counts = table.groupby("trial_key").size()
        assert set(counts.index) == planned and (counts == 1).all(), (name, counts)
        assert (table["status"] == "ok").all(), name

    assert LOCK_NAME not in {k.rsplit("/", 1)[1] for k in s3.keys(prefix)}  # every command let go of the lock
    assert list(cwd.iterdir()) == []
    assert result_files(tmp) == []


def test_a_held_s3_lock_refuses_a_second_run_naming_its_holder(s3):
    out = f"s3://{s3.bucket()}/run"
    with RunLock(out), pytest.raises(UserError, match=rf"is in use by another run \(pid {os.getpid()} on host "):
        RunLock(out).acquire()
    assert s3.keys(out[len("s3://") :]) == []  # released: the lock object is gone
    with RunLock(out):
        pass


def test_an_s3_lock_of_a_dead_pid_on_this_host_is_taken_over_with_a_warning(s3, caplog):
    bucket = s3.bucket()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    held = {"host": socket.gethostname(), "pid": int(dead.stdout), "since": "2020-01-01T00:00:00+00:00", "token": "x"}
    with s3.fs().open_output_stream(f"{bucket}/run/{LOCK_NAME}") as f:
        f.write(json.dumps(held).encode())
    with caplog.at_level(logging.WARNING, logger="deeperbench.lock"), RunLock(f"s3://{bucket}/run"):
        holder = json.loads(s3.fs().open_input_stream(f"{bucket}/run/{LOCK_NAME}").read())
    assert holder["pid"] == os.getpid()
    assert f"taking over the lock of a run that is no longer running (pid {held['pid']} on host" in caplog.text


def test_an_s3_lock_of_another_host_holds_until_its_lease_lapses(s3, monkeypatch):
    bucket = s3.bucket()
    held = {"host": "elsewhere", "pid": 1, "since": "2020-01-01T00:00:00+00:00", "token": "x"}
    with s3.fs().open_output_stream(f"{bucket}/run/{LOCK_NAME}") as f:
        f.write(json.dumps(held).encode())
    with pytest.raises(UserError, match=r"in use by another run \(pid 1 on host elsewhere, .*renewed \d+ s ago"):
        RunLock(f"s3://{bucket}/run").acquire()
    monkeypatch.setattr(lock_module, "LEASE_S", -1.0)  # as if it had not been renewed for longer than the lease
    with RunLock(f"s3://{bucket}/run"):
        pass


def test_a_held_s3_lock_is_renewed_while_its_run_lasts(s3, monkeypatch):
    bucket = s3.bucket()
    monkeypatch.setattr(lock_module, "RENEW_S", 0.2)
    path = f"{bucket}/run/{LOCK_NAME}"
    with RunLock(f"s3://{bucket}/run"):
        first = s3.fs().get_file_info(path).mtime
        time.sleep(1.5)  # S3 keeps modification times to the second
        assert s3.fs().get_file_info(path).mtime > first


def test_a_run_on_a_held_s3_prefix_exits_2_naming_the_holder_and_runs_nothing(s3, tmp_path):
    from typer.testing import CliRunner

    from harness.cli import app

    bucket = s3.bucket()
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: s\nworkload: harness_probe\nbackends: [torch]\ngrid: {index: 0}\n")
    with RunLock(f"s3://{bucket}/run"):
        result = CliRunner().invoke(app, ["run", str(spec), "--out", f"s3://{bucket}/run", "--executor", "local"])
    assert result.exit_code == 2, result.output
    [line] = result.output.strip().splitlines()
    assert re.match(rf"error: --out: 's3://{bucket}/run' is in use by another run \(pid {os.getpid()} on host ", line)
    assert not [k for k in s3.keys(bucket) if k.endswith(".parquet")]


def test_two_drivers_taking_an_s3_lock_at_once_let_exactly_one_through(s3, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr(lock_module, "SETTLE_S", 3.0)  # the read-back after both writes landed
    out = f"s3://{s3.bucket()}/run"
    locks = [RunLock(out), RunLock(out)]

    def take(lock: RunLock) -> bool:
        try:
            lock.acquire()
        except UserError:
            return False
        return True

    with ThreadPoolExecutor(2) as pool:
        taken = list(pool.map(take, locks))
    for lock in locks:
        lock.release()
    assert sorted(taken) == [False, True]


@pytest.mark.slow
def test_a_compaction_on_s3_killed_at_any_step_leaves_every_trial_readable_exactly_once(s3):
    """As ``test_compact``'s kill test, on S3, where a file is one upload (no rename) and a delete is a request."""
    from results.compact import compact
    from results.store import COMPACTED, Store
    from tests.results.test_compact import KILLER, ROOT, values, write

    bucket = s3.bucket()
    store = Store(f"s3://{bucket}/base")
    for i in range(4):
        write(store, i, 1.0)
    assert len(compact(store)) == 1
    write(store, 1, 2.0)  # re-run after the compaction: overrides its compacted row
    write(store, 4, 1.0)  # new: lands loose
    expected = {0: [1.0], 1: [2.0], 2: [1.0], 3: [1.0], 4: [1.0]}
    assert values(store) == expected
    killer = KILLER.replace('return "kill-before"', "return self.fs.type_name")  # S3's write path, not a rename
    env = os.environ | s3.env | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    killed = 0
    for at in range(1, 12):
        prefix = f"{bucket}/killed-{at}"
        for key in s3.keys(f"{bucket}/base"):
            s3.fs().copy_file(key, prefix + key[len(f"{bucket}/base") :])
        done = subprocess.run(
            [sys.executable, "-c", killer, f"s3://{prefix}", str(at)],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        copy = Store(f"s3://{prefix}")
        if done.returncode == 0:  # it made fewer than ``at`` changes: every kill point is covered
            break
        assert done.returncode == -9, done.stderr
        killed += 1
        assert values(copy) == expected, f"killed before change {at}"
        compact(copy)
        assert values(copy) == expected, f"killed before change {at}, then compacted again"
        left = [k.rsplit("/", 1)[1] for k in s3.keys(f"{prefix}/s/harness_probe")]
        assert len(left) == 1 and left[0].startswith(COMPACTED), left
    assert killed >= 4  # the upload, two loose deletes, one compacted delete at least


def test_the_endpoint_may_come_in_the_uri_query_instead_of_aws_endpoint_url(s3, monkeypatch):
    from results.store import Store
    from tests.results.test_compact import probe_trial, values, write

    bucket = s3.bucket()
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    uri = f"s3://{bucket}/q?endpoint_override={s3.endpoint.removeprefix('http://')}&scheme=http"
    with RunLock(uri):
        write(Store(uri), 7, 3.0)
    assert values(Store(uri)) == {7: [3.0]}
    assert [k.rsplit("/", 1)[1] for k in s3.keys(bucket)] == ["_common_metadata", f"{probe_trial(7).key}.parquet"]
