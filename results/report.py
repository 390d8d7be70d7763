"""One self-contained HTML report: device limits, per workload its figures, checks and summary,
the environment of each device, and every trial that did not finish."""
from __future__ import annotations

import datetime as dt
import html
import json
import os
import tempfile

import pandas as pd

import workloads
from harness.workload import Check
from results.aggregate import summarize
from results.search_report import search_html
from results.store import Store

_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;
font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
.pass{color:#0a0}.fail{color:#c00;font-weight:bold}.na{color:#888}h2{border-bottom:2px solid #333}"""


def _table(df: pd.DataFrame) -> str:
    return df.to_html(index=False, border=0, float_format=lambda v: f"{v:.4g}", na_rep="")


def _checks_html(checks: list[Check]) -> str:
    if not checks:
        return "<p class=na>This workload states no check.</p>"
    rows = []
    for c in checks:
        cls, word = {True: ("pass", "holds"), False: ("fail", "does not hold"), None: ("na", "not measured")}[c.passed]
        rows.append(f"<tr><td>{html.escape(c.name)}</td><td>{html.escape(c.claim)}</td>"
                    f"<td class={cls}>{word}</td><td>{html.escape(c.measured)}</td></tr>")
    return ("<table><tr><th>check</th><th>claim</th><th>in our measurement</th><th>measured</th></tr>"
            + "".join(rows) + "</table>")


def _limits_html(df: pd.DataFrame) -> str:
    """Best matmul FLOP/s and copy bytes/s per backend, device and dtype (from device_roofline rows)."""
    rows = df[(df["workload"] == "device_roofline") & (df["status"] == "ok")
              & df["metric"].isin(["flop_per_s", "bytes_per_s"])]
    if rows.empty:
        return "<p class=na>No device_roofline results in this directory: run it to see the device's limits.</p>"
    per_trial = rows.groupby(["backend", "device_name", "p_dtype", "metric", "trial_key"])["value"].median()
    best = (per_trial.groupby(["backend", "device_name", "p_dtype", "metric"]).max().unstack("metric")
            .reset_index().rename_axis(columns=None))
    return _table(best.rename(columns={"p_dtype": "dtype", "flop_per_s": "best matmul FLOP/s",
                                       "bytes_per_s": "best copy bytes/s"}))


def _env_html(df: pd.DataFrame) -> str:
    envs = df.drop_duplicates(["backend", "device_kind", "device_name", "host"])
    rows = [f"<tr><td>{html.escape(str(r.backend))}</td><td>{html.escape(str(r.device_kind))}</td>"
            f"<td>{html.escape(str(r.device_name))}</td><td>{html.escape(str(r.host))}</td>"
            f"<td><code>{html.escape(r.env or '')}</code></td></tr>" for r in envs.itertuples()]
    return ("<table><tr><th>backend</th><th>device</th><th>name</th><th>host</th><th>environment</th></tr>"
            + "".join(rows) + "</table>")


def _failed_html(df: pd.DataFrame) -> str:
    bad = df[~df["status"].isin(["ok"])].drop_duplicates("trial_key")
    if bad.empty:
        return "<p>Every trial finished.</p>"
    return _table(bad[["sweep", "workload", "backend", "device_kind", "params", "status", "error"]])


def _workload_html(name: str, rows: pd.DataFrame) -> tuple[str, int]:
    """A workload's section and the number of figures in it."""
    workload = workloads.get(name)
    parts = [f"<h2 id='{name}'>{html.escape(name)} (v{workload.version})</h2>",
             f"<p>{html.escape((workload.__doc__ or '').strip())}</p>"]
    figs = workload.figures(rows)
    parts += [f.to_html(full_html=False, include_plotlyjs=False, default_width="100%") for f in figs]
    parts.append("<h3>Checks</h3>" + _checks_html(workload.checks(rows)))
    summary = summarize(rows, workload.metrics)
    if not summary.empty:
        summary["params"] = summary["params"].map(lambda p: ", ".join(f"{k}={v}" for k, v in json.loads(p).items()))
        cols = ["backend", "device_kind", "params", "metric", "tag", "median", "q25", "q75", "n", "unit"]
        parts.append("<h3>Summary (median and IQR over repeats)</h3>" + _table(summary[cols]))
    return "\n".join(parts), len(figs)


def build(out: str, path: str | None = None) -> tuple[str, int]:
    """Write the report of the results under ``out`` to ``path``; return the path and the figure count."""
    from plotly.offline import get_plotlyjs

    df = Store(out).read().to_pandas()
    path = path or os.path.join(out, "report.html")
    sections, n_figs = [], 0
    present = [n for n in sorted(df["workload"].dropna().unique()) if n in workloads.REGISTRY]
    for name in present:
        section, n = _workload_html(name, df[df["workload"] == name])
        sections.append(section)
        n_figs += n
    searches, n_search_figs = search_html(df, out)
    n_figs += n_search_figs
    generated = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    page = f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>deeperbench report</title>
<style>{_CSS}</style><script type="text/javascript">{get_plotlyjs()}</script></head><body>
<h1>deeperbench report</h1><p>{len(df['trial_key'].unique())} trials from <code>{html.escape(out)}</code>,
generated {generated}.</p>
<p>Workloads: {' · '.join(f"<a href='#{n}'>{n}</a>" for n in present)}</p>
<h2>Device limits (device_roofline)</h2>{_limits_html(df)}
{''.join(sections)}
{searches}
<h2>Environment of each device</h2>{_env_html(df)}
<h2>Trials that did not finish</h2>{_failed_html(df)}
</body></html>"""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=directory, delete=False, suffix=".tmp") as f:
        f.write(page)
    os.replace(f.name, path)
    return path, n_figs
