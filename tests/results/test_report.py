"""The HTML report renders every figure offline in a real headless Chromium."""
from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

import workloads
from harness.spec import Sweep
from harness.sweep import expand
from harness.trial import execute
from results.report import build
from results.store import Store

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    """Real trials run in this process: a small roofline on both backends and two probe trials."""
    out = tmp_path_factory.mktemp("results")
    store = Store(str(out))
    roof = Sweep(name="rep", workload="device_roofline", backends=["torch", "jax"],
                 grid={"op": ["matmul", "copy"], "n": [32, 64], "warmup": 1, "timing_repeats": 3})
    probe = Sweep(name="rep", workload="harness_probe", backends=["torch"], grid={"mode": ["noop", "raise"]})
    for sweep in (roof, probe):
        for trial in expand(sweep, workloads.get(sweep.workload), device="cpu"):
            store.write(trial, execute(trial), "test")
    return out


def test_report_lists_checks_environment_and_failed_trials(results_dir):
    path, n_figs = build(str(results_dir), str(results_dir / "report.html"))
    text = open(path).read()
    assert n_figs == 3  # FLOP/s, bytes/s, probe timing
    assert "Device limits" in text and "best matmul FLOP/s" in text
    assert "harness_probe raised on purpose" in text
    assert "torch" in text and "jax" in text and "jaxlib" in text
    assert re.search(r"class=(pass|fail)>", text)
    assert "<script src=" not in text  # plotly.js is inlined


def _net_log(text: str) -> dict:
    """Chromium's net log; one cut short by the browser's exit is closed before parsing."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return json.loads(text.rstrip().rstrip(",") + "]}")


def render(page, tmp_path) -> tuple[str, set[str]]:
    """The DOM of ``page`` after its scripts ran, and the URLs the page itself asked the network for.

    Requests the browser makes on its own (update checks, account probes) carry no page origin
    ("not an origin") in the net log and are left out.
    """
    netlog = tmp_path / f"{page.stem}.net.json"
    dom = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", f"--log-net-log={netlog}", "--virtual-time-budget=10000",
         "--dump-dom", f"file://{page}"],
        capture_output=True, text=True, timeout=100, check=True).stdout
    log = _net_log(netlog.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    fetched = {e["params"]["url"] for e in log["events"]
               if e["type"] == start and "url" in e.get("params", {})
               and e["params"].get("initiator") != "not an origin"
               and not e["params"]["url"].startswith(("file:", "data:", "blob:"))}
    return dom, fetched


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (make test installs it)")
@pytest.mark.timeout(120)
def test_every_figure_renders_in_headless_chromium_without_network(results_dir, tmp_path):
    path, n_figs = build(str(results_dir), str(tmp_path / "report.html"))
    dom, fetched = render(tmp_path / "report.html", tmp_path)
    assert dom.count('<div class="plot-container plotly"') == n_figs == 3  # plotly.js drew each figure
    assert dom.count('class="main-svg"') >= n_figs
    assert not fetched, f"the report fetched {fetched}"
    control = tmp_path / "control.html"
    control.write_text('<html><body><img src="http://example.invalid/probe.png"></body></html>')
    assert any("example.invalid" in u for u in render(control, tmp_path)[1]), "the network check sees nothing"
