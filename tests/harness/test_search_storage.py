"""``search --storage``: bad URLs refused fast and whole, trials a dead driver left RUNNING failed by heartbeat."""

from __future__ import annotations

import socket
import textwrap
import time

import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from harness.cli import app
from harness.storage import Heartbeat, fail_stale, open_storage, shown

SPEC = """
name: probe-search
workload: harness_probe
backends: [torch]
grid: {sleep_s: 0.05, mode: sleep}
search:
  metric: trial_s
  direction: minimize
  space: {index: {low: 0, high: 3, int: true}}
"""


@pytest.fixture(scope="module")
def silent_server():
    """A TCP port on 127.0.0.1 that completes the handshake (the kernel's backlog) but never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield s.getsockname()[1]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket closes


@pytest.mark.parametrize(
    "url, says",
    [
        ("redis://127.0.0.1:6379/0", "unknown scheme 'redis'"),
        ("optuna.db", "unknown scheme 'none'"),
        (f"postgresql://user:secret@127.0.0.1:{closed_port()}/study", "cannot open 'postgresql://user:***@127.0.0.1"),
        ("postgresql://user@192.0.2.1:5432/study", "cannot open 'postgresql://user@192.0.2.1:5432/study'"),
        ("postgresql://user@127.0.0.1:{silent}/study", "cannot open 'postgresql://user@127.0.0.1:"),
    ],
    ids=["unknown-scheme", "no-scheme", "refused", "unroutable", "never-answers"],
)
def test_an_unusable_storage_exits_2_in_one_line_within_10_s_before_anything_is_written(
    tmp_path, silent_server, url, says
):
    url = url.replace("{silent}", str(silent_server))
    spec, out = tmp_path / "search.yaml", tmp_path / "out"
    spec.write_text(textwrap.dedent(SPEC))
    began = time.monotonic()
    args = ["search", str(spec), "--trials", "2", "--storage", url, "--out", str(out), "--executor", "local"]
    result = CliRunner().invoke(app, args)
    elapsed = time.monotonic() - began
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --storage: ") and says in lines[0], result.output
    assert "secret" not in result.output
    assert elapsed < 10, f"took {elapsed:.1f} s"
    assert not out.exists()  # no folder, lock or database made for a search that cannot start


def test_a_password_is_never_shown():
    assert shown("postgresql://me:pw@h:5/db") == "postgresql://me:***@h:5/db"
    assert shown("sqlite:///tmp/x.db") == "sqlite:///tmp/x.db"


def test_only_trials_whose_heartbeat_went_stale_are_failed(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path}/study.db", heartbeat_s=1)
    study = optuna.create_study(study_name="s", storage=storage)
    dead, live = study.ask(), study.ask()
    with Heartbeat(storage, 0.5) as beat:
        beat.add(dead._trial_id)
        beat.discard(dead._trial_id)  # its driver died: no beat after the first
        beat.add(live._trial_id)
        assert fail_stale(study, every_running=False) == []  # both beat within the 2 s grace
        time.sleep(3.0)
        assert fail_stale(study, every_running=False) == [dead.number]
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.RUNNING]
    assert fail_stale(study, every_running=True) == [live.number]  # the default storage: no other driver


@pytest.mark.timeout(300)
def test_a_search_on_a_journal_file_resumes_to_the_exact_trial_count(tmp_path):
    spec, out, journal = tmp_path / "search.yaml", tmp_path / "out", tmp_path / "study.log"
    spec.write_text(textwrap.dedent(SPEC))
    args = ["search", str(spec), "--storage", f"journal://{journal}", "--out", str(out), "--executor", "local"]
    first = CliRunner().invoke(app, [*args, "--trials", "1"])
    assert first.exit_code == 0, first.output
    storage = open_storage(f"journal://{journal}")
    optuna.load_study(study_name="probe-search", storage=storage).ask()  # a trial a killed search left RUNNING
    again = CliRunner().invoke(app, [*args, "--trials", "3"])
    assert again.exit_code == 0, again.output
    study = optuna.load_study(study_name="probe-search", storage=open_storage(f"journal://{journal}"))
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]  # no heartbeat: failed at once
