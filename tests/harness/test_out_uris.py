"""Bad ``--out`` / ``DIR`` URIs: one line naming the URI and what is allowed, exit 2, before any trial, within 10 s.

Every command that takes a results location is tried: ``run`` (and ``--dry-run``), ``report``,
``compare`` and ``compact``, against an unknown scheme, a bucket that does not exist on a real S3
server (moto, on 127.0.0.1) and an endpoint where nothing listens.
"""

from __future__ import annotations

import os
import re
import time

import pyarrow.fs as pafs
import pytest
from typer.testing import CliRunner

from harness.cli import app
from tests.results.test_store_s3 import free_port, s3  # noqa: F401  (s3: the moto server fixture)

COMMANDS = {
    "run": ["run", "{spec}", "--executor", "local", "--out", "{uri}"],
    "dry-run": ["run", "{spec}", "--dry-run", "--out", "{uri}"],
    "report": ["report", "{uri}"],
    "compare": ["compare", "{uri}", "--metric", "trial_s"],
    "compact": ["compact", "{uri}"],
}
FIELD = {"run": "--out", "dry-run": "--out", "report": "DIR", "compare": "DIR", "compact": "DIR"}
DEADLINE_S = 10.0


def invoke(command: str, uri: str, tmp_path) -> tuple[str, float]:
    """Run ``command`` on ``uri`` from an empty folder; return its one error line and how long it took."""
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: s\nworkload: harness_probe\nbackends: [torch]\ngrid: {index: 0}\n")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    args = [a.format(spec=spec, uri=uri) for a in COMMANDS[command]]
    start = time.monotonic()
    old = os.getcwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(app, args)
    finally:
        os.chdir(old)
    took = time.monotonic() - start
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert list(cwd.iterdir()) == [], "a bad URI wrote into the working folder"
    assert "trial" not in lines[0]
    return lines[0], took


@pytest.mark.parametrize("command", COMMANDS)
def test_an_out_uri_of_an_unknown_scheme_exits_2_naming_it_and_the_allowed_ones(command, tmp_path):
    line, took = invoke(command, "foo://x/results", tmp_path)
    assert line.startswith(f"error: {FIELD[command]}: pyarrow cannot open 'foo://x/results'"), line
    assert "allowed: a folder or a URI pyarrow knows (s3://bucket/prefix" in line, line
    assert took < DEADLINE_S, f"{took:.1f} s"


@pytest.mark.parametrize("command", COMMANDS)
def test_an_s3_bucket_that_does_not_exist_exits_2_and_creates_nothing(command, s3, tmp_path):  # noqa: F811
    line, took = invoke(command, "s3://no-such-bucket/run", tmp_path)
    assert line.startswith(f"error: {FIELD[command]}: the bucket 'no-such-bucket' of 's3://no-such-bucket/run'"), line
    assert "does not exist (create it first, or give an existing bucket)" in line, line
    assert took < DEADLINE_S, f"{took:.1f} s"
    fs = pafs.S3FileSystem(endpoint_override=s3.endpoint, region="us-east-1")
    assert fs.get_file_info("no-such-bucket").type == pafs.FileType.NotFound


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unreachable_s3_endpoint_exits_2_within_10_s(command, monkeypatch, tmp_path):
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    for name, value in {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    line, took = invoke(command, "s3://bucket/run", tmp_path)
    assert re.match(rf"error: {FIELD[command]}: (cannot reach|no answer from) 's3://bucket/run'", line), line
    assert "AWS_ENDPOINT_URL" in line, line
    assert took < DEADLINE_S, f"{took:.1f} s"


def test_an_unreachable_endpoint_in_the_uri_query_is_named(tmp_path):
    uri = f"s3://bucket/run?endpoint_override=127.0.0.1:{free_port()}&scheme=http"
    line, took = invoke("run", uri, tmp_path)
    assert line.startswith(f"error: --out: cannot reach '{uri}'"), line
    assert took < DEADLINE_S, f"{took:.1f} s"
