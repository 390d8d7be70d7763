"""The Parquet store: one atomic file per trial, statuses for resume, one schema on read."""

from __future__ import annotations

import datetime as dt
import logging
import os
import re

import pyarrow as pa
import pytest

import workloads
from core.trial import Outcome
from core.workload import Record
from harness.spec import Sweep
from harness.sweep import expand
from results.store import Store

PROBE = workloads.get("harness_probe")
ROOF = workloads.get("device_roofline")


def probe_trials(n: int = 3):
    sweep = Sweep(name="st", workload="harness_probe", backends=["torch"], grid={"index": list(range(n))})
    return expand(sweep, PROBE, device="cpu")


def outcome(status: str = "ok", records=None) -> Outcome:
    return Outcome(
        status=status,
        records=records if records is not None else [Record("trial_s", 0.5)],
        started_at=dt.datetime.now(dt.timezone.utc),
        duration_s=0.6,
        host="h",
        device_name="cpu0",
        error=None if status == "ok" else "boom",
        env={"torch": "x"},
    )


def test_write_then_read_round_trips_rows_and_typed_param_columns(tmp_path):
    store = Store(str(tmp_path))
    trials = probe_trials()
    for t in trials:
        store.write(t, outcome(records=[Record("trial_s", 0.1, sample=0), Record("trial_s", 0.2, sample=1)]), "run1")
    table = store.read()
    assert table.num_rows == 6
    assert table.schema.field("p_index").type == pa.int64()
    assert table.schema.field("p_sleep_s").type == pa.float64()
    assert sorted(set(table["p_index"].to_pylist())) == [0, 1, 2]
    assert set(table["unit"].to_pylist()) == {"s"}
    files = sorted(os.listdir(tmp_path / "st" / "harness_probe"))
    assert files == sorted(f"{t.key}.parquet" for t in trials)


def test_a_failed_trial_is_one_row_with_its_status_and_a_null_metric(tmp_path):
    store = Store(str(tmp_path))
    [t] = probe_trials(1)
    store.write(t, outcome("failed", records=[]), "run1")
    rows = store.read().to_pylist()
    assert len(rows) == 1
    assert rows[0]["status"] == "failed" and rows[0]["metric"] is None and rows[0]["error"] == "boom"


def test_rewriting_a_trial_replaces_its_file(tmp_path):
    store = Store(str(tmp_path))
    [t] = probe_trials(1)
    store.write(t, outcome("failed", records=[]), "run1")
    store.write(t, outcome("ok"), "run2")
    assert store.statuses("st") == {t.key: "ok"}
    assert store.read().num_rows == 1
    assert not [f for f in os.listdir(tmp_path / "st" / "harness_probe") if f.startswith(".tmp")]


def test_half_written_and_temporary_files_are_ignored_with_a_warning(tmp_path, caplog):
    store = Store(str(tmp_path))
    good, bad = probe_trials(2)
    store.write(good, outcome(), "run1")
    directory = tmp_path / "st" / "harness_probe"
    (directory / f"{bad.key}.parquet").write_bytes(b"PAR1 truncated by a kill")
    (directory / f".tmp-123-{bad.key}.parquet").write_bytes(b"partial")
    with caplog.at_level(logging.WARNING, logger="deeperbench.store"):
        assert store.statuses("st") == {good.key: "ok"}
    assert any(bad.key in r.message and "will run again" in r.message for r in caplog.records)
    assert store.read().num_rows == 1


def test_workloads_share_one_schema_and_columns_keep_their_types(tmp_path):
    store = Store(str(tmp_path))
    [p] = probe_trials(1)
    store.write(p, outcome(), "run1")
    roof = expand(Sweep(name="st", workload="device_roofline", backends=["jax"], grid={"n": 64}), ROOF, device="cpu")[0]
    store.write(roof, outcome(records=[Record("time_s", 1e-3, sample=0)]), "run1")
    table = store.read()
    assert table.num_rows == 2
    assert table.schema.field("p_n").type == pa.int64()
    by_workload = {r["workload"]: r for r in table.to_pylist()}
    assert by_workload["device_roofline"]["p_n"] == 64 and by_workload["harness_probe"]["p_n"] is None


def test_every_registered_workload_agrees_on_parameter_column_types():
    """A parameter name shared by two workloads must have one Arrow type (else reading fails)."""
    from results.schema import unified_schema

    schema = unified_schema([workloads.get(n) for n in workloads.names()])
    assert "p_mode" in schema.names and "p_n" in schema.names


def closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "uri, says",
    [
        ("nosuch://bucket/x", "pyarrow cannot open 'nosuch://bucket/x'"),
        ("s3://bucket/x?scheme=http&endpoint_override=127.0.0.1:{port}", "cannot reach|no answer from"),
    ],
    ids=["unknown-scheme", "unreachable-endpoint"],
)
def test_a_bad_out_uri_is_one_line_and_exit_2_within_10_s(tmp_path, uri, says):
    import time

    from typer.testing import CliRunner

    from harness.cli import app

    spec = tmp_path / "spec.yaml"
    spec.write_text("name: s\nworkload: harness_probe\nbackends: [torch]\ngrid: {index: 0}\n")
    uri = uri.format(port=closed_port())
    start = time.monotonic()
    result = CliRunner().invoke(app, ["run", str(spec), "--out", uri, "--executor", "local"])
    took = time.monotonic() - start
    assert result.exit_code == 2
    [line] = result.output.strip().splitlines()
    assert line.startswith("error: --out:") and re.search(says, line), line
    assert took < 10, f"{took:.1f} s"
    assert not list(tmp_path.glob("**/*.parquet"))
