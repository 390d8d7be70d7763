"""The HTML report: the run and every verdict on the first screen, workloads, failures, environment; in Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys

import pandas as pd
import pytest

import workloads
from core.errors import UserError
from core.figures import Setting
from harness.spec import Sweep
from harness.sweep import expand
from harness.trial import execute
from results import report
from results.report import build
from results.store import Store

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NEEDS_CHROMIUM = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Chromium: run `make chromium` (as root: apt-get install chromium), then retry"
)


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    """Real trials run in this process: a small roofline on both backends, and probe trials that end every way."""
    out = tmp_path_factory.mktemp("results")
    store = Store(str(out))
    roof = Sweep(
        name="rep",
        workload="device_roofline",
        backends=["torch", "jax"],
        grid={"op": ["matmul", "copy"], "n": [32, 64], "warmup": 1, "timing_repeats": 3},
    )
    probe = Sweep(name="rep", workload="harness_probe", backends=["torch"], grid={"mode": ["noop", "raise", "skip"]})
    for sweep in (roof, probe):
        for trial in expand(sweep, workloads.get(sweep.workload), device="cpu"):
            store.write(trial, execute(trial), "test")
    return out


@pytest.fixture(scope="module")
def page(results_dir, tmp_path_factory):
    path, n_figs = build(str(results_dir), str(tmp_path_factory.mktemp("page") / "report.html"))
    return open(path).read(), n_figs


def test_report_is_written_beside_the_results_readable_by_everyone_and_parquet_still_reads(results_dir):
    before = len(Store(str(results_dir)).read())
    old = os.umask(0o022)
    try:
        path, _ = build(str(results_dir))
    finally:
        os.umask(old)
    assert path == f"{results_dir}/_report.html" and os.path.exists(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert len(pd.read_parquet(results_dir)) == before  # pyarrow's discovery skips the _report.html
    assert not [f for f in os.listdir(results_dir) if f.endswith(".tmp")]


def test_report_on_a_folder_without_results_is_a_user_error_and_writes_nothing(tmp_path):
    with pytest.raises(UserError, match="no results"):
        build(str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_first_screen_has_the_run_then_a_verdict_per_check_linking_to_it(page):
    text, _ = page
    run = text.index("<h2 id=run>")
    verdicts = text.index("<h2 id=verdicts>")
    assert run < verdicts < text.index("id='wl-device_roofline'")
    head = text[run:verdicts]
    assert "ok 9" in head and "failed 1" in head and "skipped 1" in head  # 8 roofline trials and the no-op are ok
    assert "AMD" in head or "cpu:" in head
    assert re.search(r"torch \d", head) and re.search(r"JAX \d", head) and "Python" in head
    table = text[verdicts : text.index("</table>", verdicts)]
    counts = dict(re.findall(r"class='chip [a-z]*'>([a-z ]+): (\d+)</span>", table))
    assert set(counts) == {"holds", "does not hold", "too small to decide", "not measured"}
    assert sum(map(int, counts.values())) == 3 and counts["not measured"] == "0"  # two roofline groups, the no-op
    links = re.findall(r"<a href='#([^']+)'>", table)
    assert len([a for a in links if "-check-" in a]) == 3
    for anchor in links:
        assert f"id='{anchor}'" in text, anchor


def test_workload_sections_render_the_description_and_collapse_a_summary_of_varying_parameters(page):
    text, n_figs = page
    assert n_figs == 3  # FLOP/s, bytes/s, probe timing
    assert "<code>benchmarks/harness_overhead.py</code>" in text and "``" not in text.split("<body>", 1)[1]
    roof = text[text.index("id='wl-device_roofline'") : text.index("id='wl-harness_probe'")]
    summary = roof[roof.index("<details><summary>Summary") :]
    header = summary[summary.index("<tr>") : summary.index("</tr>")]
    assert "<th>op</th>" in header and "<th>n</th>" in header and "<th>warmup</th>" not in header
    assert "warmup=1" in summary and "timing_repeats=3" in summary  # fixed parameters, stated once
    assert roof.index("class=figs") < roof.index("<h3>Checks</h3>") < roof.index("<details>")
    assert "Fig." not in roof.split("<h3>Checks</h3>")[0].split("class=figs")[0]  # beyond the thesis: no number


def test_failed_trials_show_their_whole_traceback(page):
    text, _ = page
    part = text[text.index("<h2 id=unfinished>") : text.index("<h2 id=environment>")]
    assert "<td class=fails>failed</td>" in part
    assert re.search(r"<summary>[^<]*RuntimeError: harness_probe raised on purpose", part)
    pre = part[part.index("<pre>") : part.index("</pre>")]
    assert "Traceback (most recent call last)" in pre and pre.count("File ") >= 2
    assert "skipped on purpose" in part


def test_environment_is_a_table_of_versions_without_cuda_on_a_cpu(page):
    text, _ = page
    env = text[text.index("<h2 id=environment>") :]
    for row in ("Python", "torch", "JAX", "Ray", "numpy", "pyarrow", "git commit", "device"):
        assert f"<th>{row}</th>" in env, row
    assert "<th>CUDA</th>" not in env
    assert "best matmul" in env and "FLOP/s" in env


def test_plotly_is_included_once_and_nothing_is_fetched_from_elsewhere(page):
    from plotly.offline import get_plotlyjs

    text, _ = page
    assert text.count(get_plotlyjs()[:300]) == 1
    assert "<script src=" not in text


def test_a_setting_sets_the_thesis_beside_the_values_this_run_used(results_dir):
    rows = Store(str(results_dir)).read().to_pandas()
    setting = Setting(
        "Fig. 9.9",
        thesis={"n": "4096", "dtype": "float32", "device": "H200"},
        ours={"n": "p_n", "dtype": "p_dtype", "seeds": "seed"},
        where={"workload": "device_roofline"},
    )
    html = report._setting_html(setting, rows)
    cells = re.findall(r"<tr><th>([^<]*)</th><td>([^<]*)</td><td>([^<]*)</td></tr>", html)
    assert cells == [
        ("n", "4096", "32, 64"),
        ("dtype", "float32", "float32"),
        ("device", "H200", "not recorded"),
        ("seeds", "", "0"),
    ]


def _net_log(text: str) -> dict:
    """Chromium's net log; one cut short by the browser's exit is closed before parsing."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return json.loads(text.rstrip().rstrip(",") + "]}")


_MEASURE = """<script>window.addEventListener('load', () => setTimeout(() => {
  const v = document.querySelector('table.verdicts') || document.getElementById('verdicts');
  document.body.setAttribute('data-height', document.documentElement.scrollHeight);
  document.body.setAttribute('data-verdicts', v.getBoundingClientRect().top + window.scrollY);
  document.body.setAttribute('data-verdicts-bottom', v.getBoundingClientRect().bottom + window.scrollY);
}, 1000));</script></body>"""
"""Appended to a copy of the report: writes the page height and the verdict table's place into the DOM."""


def render(page, tmp_path) -> tuple[str, set[str]]:
    """The DOM of ``page`` in a 1400 px wide window after its scripts ran, and the URLs the page asked for.

    Requests the browser makes on its own (update checks, account probes) carry no page origin
    ("not an origin") in the net log and are left out.
    """
    netlog = tmp_path / f"{page.stem}.net.json"
    dom = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1400,1000",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--log-net-log={netlog}",
            "--virtual-time-budget=15000",
            "--dump-dom",
            f"file://{page}",
        ],
        capture_output=True,
        text=True,
        timeout=200,
        check=True,
    ).stdout
    log = _net_log(netlog.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    fetched = {
        e["params"]["url"]
        for e in log["events"]
        if e["type"] == start
        and "url" in e.get("params", {})
        and e["params"].get("initiator") != "not an origin"
        and not e["params"]["url"].startswith(("file:", "data:", "blob:"))
    }
    return dom, fetched


def measure(path, tmp_path) -> tuple[str, dict[str, float]]:
    """Render a copy of the report with the measuring script; its DOM and height, verdict table top and bottom (px)."""
    copy = tmp_path / "measured.html"
    with open(path) as f:
        copy.write_text(f.read().replace("</body>", _MEASURE, 1))
    dom, fetched = render(copy, tmp_path)
    assert not fetched, f"the report fetched {fetched}"
    sizes = {k: float(v) for k, v in re.findall(r'data-(height|verdicts|verdicts-bottom)="([\d.]+)"', dom)}
    return dom, sizes


@NEEDS_CHROMIUM
@pytest.mark.timeout(240)
def test_every_figure_renders_offline_and_the_verdicts_are_on_the_first_screen(results_dir, tmp_path):
    path, n_figs = build(str(results_dir), str(tmp_path / "report.html"))
    dom, sizes = measure(path, tmp_path)
    print(f"report: {os.path.getsize(path) / 2**20:.2f} MiB, {sizes}")
    assert dom.count('<div class="plot-container plotly"') == n_figs == 3  # plotly.js drew each figure
    assert dom.count('class="main-svg"') >= n_figs
    assert sizes["verdicts"] < 1000 and sizes["verdicts-bottom"] < 1000, sizes
    assert 1000 < sizes["height"] < 15_000, sizes
    assert os.path.getsize(path) < 6 * 2**20
    control = tmp_path / "control.html"
    control.write_text('<html><body><img src="http://example.invalid/probe.png"></body></html>')
    assert any("example.invalid" in u for u in render(control, tmp_path)[1]), "the network check sees nothing"


@NEEDS_CHROMIUM
@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_the_demo_report_is_under_6_mb_and_15000_px_with_the_verdicts_first(tmp_path):
    """``make demo``'s sweep (sweeps/smoke.yaml, every workload), its report measured in a 1400 px window."""
    out = tmp_path / "demo"
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    done = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "deeperbench"), "run", "sweeps/smoke.yaml", "--out", str(out)],
        timeout=1400,
        cwd=root,
    )
    assert done.returncode in (0, 1)  # 1: some trial failed; the report lists it
    path, n_figs = build(str(out))
    size = os.path.getsize(path)
    dom, sizes = measure(path, tmp_path)
    print(
        f"demo report: {size / 2**20:.2f} MiB, {sizes['height']:.0f} px tall, verdicts at "
        f"{sizes['verdicts']:.0f} px, {n_figs} figures"
    )
    assert dom.count('<div class="plot-container plotly"') == n_figs
    assert size < 6 * 2**20 and sizes["height"] < 15_000 and sizes["verdicts"] < 1000, (size, sizes)
