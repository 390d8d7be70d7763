"""``search --storage postgresql://``: a real PostgreSQL server on 127.0.0.1, a search killed mid-way and resumed.

The server is Debian's ``postgresql`` (``.ci/run`` installs it when missing); without it the test skips,
except in CI (``CI=true``), where it fails.
"""

from __future__ import annotations

import glob
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

import optuna
import psycopg2
import pytest
from optuna.trial import TrialState

from results.store import Store

ROOT = pathlib.Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "harness"]
TRIALS = 8
SPEC = """
name: pg-search
workload: harness_probe
backends: [torch]
resources: {cpus: 1}
grid: {mode: sleep, sleep_s: 1.5}
search:
  metric: trial_s
  direction: minimize
  space: {index: {low: 0, high: 50, int: true}}
"""


def postgres_bin() -> str | None:
    """The folder of ``initdb`` and ``pg_ctl``: on PATH, else Debian's newest ``/usr/lib/postgresql/*/bin``."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return os.path.dirname(os.path.realpath(found))
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[-3].split(".")[0]))
    return os.path.dirname(versions[-1]) if versions else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres_url():
    """A fresh PostgreSQL cluster listening on 127.0.0.1 only; its URL. Postgres refuses root: run as ``postgres``."""
    bindir = postgres_bin()
    if bindir is None:
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL binaries (initdb, pg_ctl) not found; .ci/run installs Debian's postgresql")
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) not found; install Debian's postgresql (as .ci/run does)")
    as_user: list[str] = []
    base = tempfile.mkdtemp(prefix="deeperbench-pg-")  # not under tmp_path: its parents are closed to other users
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(base, "postgres", "postgres")
    data, port = os.path.join(base, "data"), free_port()
    pg_ctl = [*as_user, os.path.join(bindir, "pg_ctl"), "-D", data]
    try:
        subprocess.run(
            [*as_user, os.path.join(bindir, "initdb"), "-D", data, "-A", "trust", "-U", "postgres", "--no-sync"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        options = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={base} -c fsync=off"
        subprocess.run(
            [*pg_ctl, "-o", options, "-l", os.path.join(base, "log"), "-w", "-t", "60", "start"],
            check=True,
            capture_output=True,
            timeout=90,
        )
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


def search(spec: pathlib.Path, out: pathlib.Path, url: str) -> list[str]:
    return [
        *CLI,
        "search",
        str(spec),
        "--trials",
        str(TRIALS),
        "--parallel",
        "2",
        "--storage",
        url,
        "--heartbeat-s",
        "1",
        "--out",
        str(out),
    ]


def study_at(url: str) -> optuna.Study:
    """The study, read with psycopg2 named (SQLAlchemy's default for ``postgresql://`` is psycopg 3)."""
    return optuna.load_study(study_name="pg-search", storage=url.replace("postgresql://", "postgresql+psycopg2://"))


def states(url: str) -> list[TrialState]:
    try:
        return [t.state for t in study_at(url).trials]
    except KeyError:  # the study is not created yet
        return []


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_search_on_postgres_killed_and_resumed_keeps_the_trial_count_exact(tmp_path, postgres_url):
    spec, out = tmp_path / "search.yaml", tmp_path / "out"
    spec.write_text(textwrap.dedent(SPEC))
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen(
        search(spec, out, postgres_url),
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and first.poll() is None:
            now = states(postgres_url)
            if now.count(TrialState.COMPLETE) >= 2 and TrialState.RUNNING in now:
                break
            time.sleep(0.2)
        assert first.poll() is None, "the first search ended before it could be killed mid-way"
        assert TrialState.RUNNING in states(postgres_url)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the driver and everything it started, with no chance to clean up
        first.wait(timeout=60)
    killed = states(postgres_url)
    assert 2 <= killed.count(TrialState.COMPLETE) < TRIALS and TrialState.RUNNING in killed

    again = subprocess.run(search(spec, out, postgres_url), cwd=ROOT, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]

    study = study_at(postgres_url)
    assert [t.number for t in study.trials] == list(range(TRIALS))  # none lost, none doubled
    left = [t.number for t in study.trials if t.state not in (TrialState.COMPLETE, TrialState.FAIL)]
    assert left == []  # what the kill left RUNNING was failed once its heartbeat went stale
    failed = [t.number for t in study.trials if t.state == TrialState.FAIL]
    assert failed == [i for i, s in enumerate(killed) if s == TrialState.RUNNING]
    for number in failed:
        assert f"trial {number} of an interrupted search marked FAIL" in again.stderr
    with psycopg2.connect(postgres_url) as db, db.cursor() as cursor:
        cursor.execute("select count(distinct trial_id) from trial_heartbeats")
        assert cursor.fetchone()[0] == TRIALS  # every trial beat from the moment it was asked
    stored = [r["trial_number"] for r in Store(str(out)).read().to_pylist()]
    assert len(stored) == len(set(stored))  # each trial stored at most once
    complete = {t.number for t in study.trials if t.state == TrialState.COMPLETE}
    assert complete <= set(stored) and len(complete) == TRIALS - len(failed)
    assert "pg-search: " in again.stdout and f"{len(complete)} complete trials" in again.stdout
