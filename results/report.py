"""One self-contained HTML report: the run and every check's verdict on the first screen, then per workload
its description, thesis settings, figures, checks and summary, the searches, the trials that did not
finish, and the environment.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import inspect
import os
import re
import uuid
from collections import Counter
from typing import Any

import pandas as pd
import pyarrow.fs as pafs
from markdown_it import MarkdownIt

from core.aggregate import Summaries, ok_rows
from core.checks import VERDICTS, Check
from core.errors import UserError
from core.registry import WORKLOADS
from core.workload import settings as settings_of
from results import plots
from results.report_tables import env_html, limits_html, run_html, unfinished_html
from results.report_tables import esc as _esc
from results.search_report import search_html
from results.store import Store

REPORT_NAME = "_report.html"
"""Default file name under the results folder; pyarrow's dataset discovery ignores names starting with ``_``."""

_SUMMARY_ROWS = 300
_VERDICT_CLASS = {
    "holds": "holds",
    "does not hold": "fails",
    "too small to decide": "small",
    "not measured": "na",
    "error": "fails",
}
_CSS = """body{font-family:system-ui,sans-serif;margin:0 auto;padding:0 16px;max-width:1360px;font-size:14px}
h1{font-size:22px;margin:12px 0 2px}h2{font-size:18px;border-bottom:2px solid #333;margin:28px 0 8px}
h3{font-size:15px;margin:14px 0 6px}p{margin:4px 0}nav{margin:4px 0 8px;line-height:1.7}nav a{margin-right:10px}
table{border-collapse:collapse;font-size:12px;margin:4px 0}td,th{border:1px solid #ccc;padding:2px 6px;text-align:left;
vertical-align:top}th{background:#f3f3f3}.kv th{width:90px}small{font-weight:normal;color:#666}
.holds{color:#0a6b0a;font-weight:600}.fails{color:#b00;font-weight:700}.small{color:#a66b00;font-weight:600}
.na{color:#777}.chip{display:inline-block;padding:1px 8px;margin-right:6px;border-radius:9px;background:#f3f3f3}
.verdicts,.checks{table-layout:fixed;width:100%}.checks{font-size:11.5px}
.verdicts td{white-space:nowrap;overflow:hidden;text-overflow:ellipsis}.verdicts td[rowspan]{white-space:normal}
.figs{display:grid;grid-template-columns:repeat(auto-fill,minmax(320px,1fr));gap:4px}
.figs .span2{grid-column:span 2}.figs .span3{grid-column:span 3}.figs .span4{grid-column:1/-1}
.figtitle{font-size:13px;font-weight:600;margin:6px 0 0 8px}.doc p{max-width:960px}
.settings{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:0 12px;align-items:start}
.settings table{width:100%}code{font-size:12px;background:#f5f5f5}details{margin:6px 0}
summary{cursor:pointer;color:#245}pre{white-space:pre-wrap;font-size:11.5px;margin:4px 0}"""


@dataclasses.dataclass
class _Section:
    """A workload's part of the report."""

    name: str
    html: str
    checks: list[Check]
    error: str = ""
    n_figs: int = 0


def build(out: str, path: str | None = None) -> tuple[str, int]:
    """Write the report of the results under ``out`` to ``path`` (default ``<out>/_report.html``).

    Returns:
        The path written and the number of figures in the report.

    Raises:
        UserError: when ``out`` holds no results; nothing is written then.
    """
    df = Store(out).read().to_pandas()
    if df.empty:
        raise UserError(f"DIR: no results under '{out}'")
    page, n_figs = render(df, out)
    path = path or f"{out.rstrip('/')}/{REPORT_NAME}"
    _write(path, page)
    return path, n_figs


def render(df: pd.DataFrame, out: str) -> tuple[str, int]:
    """The report page of the rows ``df`` (read from ``out``) and its figure count."""
    from plotly.offline import get_plotlyjs

    styles = plots.Styles()
    names = sorted(df["workload"].dropna().unique(), key=_thesis_order)
    sections = [_workload_section(name, df[df["workload"] == name], styles) for name in names]
    searches, n_search_figs = search_html(df, out, styles)
    toc = (
        [("run", "Run"), ("verdicts", "Verdicts")]
        + [(_anchor(s.name), s.name) for s in sections]
        + ([("searches", "Searches")] if searches else [])
        + [("unfinished", "Trials that did not finish"), ("environment", "Environment")]
    )
    generated = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>deeperbench report</title>
<style>{_CSS}</style><script type="text/javascript">{get_plotlyjs()}</script></head><body>
<h1>deeperbench report</h1><p class=na>{html.escape(out)} · generated {generated}</p>
<nav>{" ".join(f"<a href='#{a}'>{html.escape(t)}</a>" for a, t in toc)}</nav>
<h2 id=run>Run</h2>{run_html(df)}
<h2 id=verdicts>Verdicts of every check</h2>{_verdicts_html(sections)}
{"".join(s.html for s in sections)}
{searches}
<h2 id=unfinished>Trials that did not finish</h2>{unfinished_html(df)}
<h2 id=environment>Environment</h2>{env_html(df)}{limits_html(df)}
</body></html>"""
    return page, sum(s.n_figs for s in sections) + n_search_figs


def _load(name: str) -> tuple[Any, str]:
    """The workload registered as ``name``, or None and why not (not installed here, or it fails to import)."""
    if name not in WORKLOADS:
        return None, "this workload is not installed here"
    try:
        return WORKLOADS.get(name), ""
    except Exception as err:
        return None, f"the workload module does not load ({type(err).__name__}: {err})"


def _thesis_order(name: str) -> tuple:
    """Workloads in the thesis' order (their first figure's chapter and number), those beyond it last."""
    workload, _ = _load(name)
    figures = workload.figures if workload is not None else ()
    found = [tuple(int(n) for n in m.groups()) for f in figures if (m := re.search(r"(\d+)\.(\d+)", f.thesis))]
    return (min(found) if found else (999, 0), name)


def _write(path: str, text: str) -> None:
    """Write ``text`` to ``path`` (a local path or a pyarrow URI) atomically, with the umask's usual mode."""
    fs, target = pafs.FileSystem.from_uri(path if "://" in path else os.path.abspath(path))
    parent = os.path.dirname(target)
    fs.create_dir(parent, recursive=True)
    tmp = f"{parent}/.{os.path.basename(target)}.{uuid.uuid4().hex}.tmp"
    with fs.open_output_stream(tmp) as f:
        f.write(text.encode())
    fs.move(tmp, target)


def _anchor(name: str) -> str:
    return "wl-" + "".join(c if c.isalnum() or c in "-_" else "-" for c in name)


def _verdicts_html(sections: list[_Section]) -> str:
    """Counts per verdict, then one row per check of every workload, linking to the check."""
    rows: list[str] = []
    counts: Counter[str] = Counter()
    for s in sections:
        entries: list[tuple[str, str, str, str, str]] = [
            (c.verdict, c.name, c.figure, c.measured, f"{_anchor(s.name)}-check-{i}") for i, c in enumerate(s.checks)
        ]
        if s.error:
            entries.append(("error", "checks could not be computed", "", s.error, _anchor(s.name)))
        for i, (verdict, name, figure, measured, anchor) in enumerate(entries):
            counts[verdict] += 1
            first = f"<td rowspan={len(entries)}><a href='#{_anchor(s.name)}'>{_esc(s.name)}</a></td>" if i == 0 else ""
            rows.append(
                f"<tr>{first}<td title='{_esc(name)}'><a href='#{anchor}'>{_esc(name)}</a></td>"
                f"<td class={_VERDICT_CLASS[verdict]}>{_esc(verdict)}</td>"
                f"<td>{_esc(figure) or '<span class=na>beyond</span>'}</td>"
                f"<td title='{_esc(measured)}'>{_esc(measured)}</td></tr>"
            )
    chips = " ".join(
        f"<span class='chip {_VERDICT_CLASS[v]}'>{v}: {counts[v]}</span>"
        for v in (*VERDICTS, "error")
        if counts[v] or v in VERDICTS
    )
    if not rows:
        return f"<p>{chips}</p><p class=na>No workload here states a check.</p>"
    return (
        f"<p>{chips}</p><table class=verdicts><colgroup><col style='width:11%'><col style='width:31%'>"
        "<col style='width:11.5%'><col style='width:7.5%'><col></colgroup><tr><th>workload</th><th>check</th>"
        f"<th>verdict</th><th>thesis</th><th>measured (hover for all of it)</th></tr>{''.join(rows)}</table>"
    )


def _markdown(text: str) -> str:
    """A docstring as HTML: paragraphs, lists, ``code`` as <code>; raw HTML in it is escaped."""
    return MarkdownIt("commonmark", {"html": False}).render(text)


def _workload_section(name: str, rows: pd.DataFrame, styles: plots.Styles) -> _Section:
    """Description, settings, figures, checks and the collapsed summary of one workload."""
    anchor = _anchor(name)
    workload, error = _load(name)
    if workload is None:
        return _Section(
            name,
            f"<h2 id='{anchor}'>{_esc(name)}</h2><p class=fails>{_esc(error)}: its figures "
            "and checks cannot be drawn.</p>",
            [],
            error,
        )
    doc = inspect.getdoc(workload) or ""
    parts = [
        f"<h2 id='{anchor}'>{_esc(name)} <small>v{workload.version}</small></h2>",
        f"<div class=doc>{_markdown(doc)}</div>",
    ]
    setting_tables = [_setting_html(s, rows) for s in settings_of(workload)]
    if setting_tables:
        figures = ", ".join(dict.fromkeys(s.figure for s in settings_of(workload)))
        parts.append(
            f"<details class=setting><summary>Setting of {_esc(figures)}: the thesis beside this run</summary>"
            f"<div class=settings>{''.join(setting_tables)}</div></details>"
        )
    figs, n_figs, summaries = [], 0, Summaries(rows, workload.metrics)  # each trial reduced once per section
    for declaration in workload.figures:
        try:
            fig = plots.draw(declaration, rows, workload.metrics, styles, summaries)
        except Exception as err:
            figs.append(f"<p class=fails>Figure '{_esc(declaration.title)}' could not be drawn: {_esc(err)}</p>")
            continue
        if fig is not None:
            figs.append(plots.embed(fig))
            n_figs += 1
    if figs:
        parts.append("<div class=figs>" + "".join(figs) + "</div>")
    try:
        checks, error = list(workload.checks(rows)), ""
    except Exception as err:
        checks, error = [], f"{type(err).__name__}: {err}"
    parts.append("<h3>Checks</h3>" + _checks_html(anchor, checks, error))
    parts.append(_summary_html(summaries.summarize(workload.metrics)))
    return _Section(name, "\n".join(parts), checks, error, n_figs)


def _distinct_text(values: pd.Series) -> str:
    """The distinct values of a column, sorted: all of them when few, else the first, last and count."""
    distinct = sorted(values.dropna().unique(), key=plots.sort_key)
    if not distinct:
        return "not recorded"
    texts = [f"{v:g}" if isinstance(v, float) else str(v) for v in distinct]
    return ", ".join(texts) if len(texts) <= 6 else f"{', '.join(texts[:3])}, ..., {texts[-1]} ({len(texts)} values)"


def _setting_html(setting: Any, rows: pd.DataFrame) -> str:
    """One thesis figure's setting beside this run's (the distinct values of each named column)."""
    ours_rows = ok_rows(rows)
    for column, value in setting.where.items():
        if column in ours_rows:
            keep = list(value) if isinstance(value, (list, tuple, set)) else [value]
            ours_rows = ours_rows[ours_rows[column].isin(keep)]
    labels = list(dict.fromkeys([*setting.thesis, *setting.ours]))

    def ours(label: str) -> str:
        column = setting.ours.get(label)
        return _distinct_text(ours_rows[column]) if column in ours_rows else "not recorded"

    body = "".join(
        f"<tr><th>{_esc(label)}</th><td>{_esc(setting.thesis.get(label, ''))}</td><td>{_esc(ours(label))}</td></tr>"
        for label in labels
    )
    head = "this run" if not ours_rows.empty else "this run (no trial has this setting)"
    return f"<table><tr><th>{_esc(setting.figure)}</th><th>thesis</th><th>{head}</th></tr>{body}</table>"


def _checks_html(anchor: str, checks: list[Check], error: str) -> str:
    """One row per check; a thesis figure, claim or note equal to the row above spans both rows."""
    if error:
        return f"<p class=fails>checks() raised: {_esc(error)}</p>"
    if not checks:
        return "<p class=na>This workload states no check.</p>"
    spans = {field: _runs([getattr(c, field) for c in checks]) for field in ("figure", "claim", "note")}
    rows = []
    for i, c in enumerate(checks):
        cells = {f: f"<td rowspan={spans[f][i]}>{_esc(getattr(c, f))}</td>" if spans[f][i] else "" for f in spans}
        rows.append(
            f"<tr id='{anchor}-check-{i}'><td class={_VERDICT_CLASS[c.verdict]}>{_esc(c.verdict)}</td>"
            f"<td>{_esc(c.name)}</td>{cells['figure']}{cells['claim']}<td>{_esc(c.measured)}</td>"
            f"{cells['note']}</tr>"
        )
    return (
        "<table class=checks><colgroup><col style='width:7.5%'><col style='width:17%'><col style='width:6.5%'>"
        "<col style='width:26%'><col style='width:20%'><col></colgroup><tr><th>verdict</th><th>check</th>"
        "<th>thesis</th><th>claim</th><th>measured</th><th>note</th></tr>" + "".join(rows) + "</table>"
    )


def _runs(values: list[str]) -> list[int]:
    """For each value, the length of the run of equal values it starts (0 where it continues one above)."""
    spans = [0] * len(values)
    start = 0
    for i in range(1, len(values) + 1):
        if i == len(values) or values[i] != values[start]:
            spans[start], start = i - start, i
    return spans


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else _esc(value)


def _summary_html(summary: pd.DataFrame) -> str:
    """The summary table, collapsed, with only the parameters that vary; the fixed ones stated once above it."""
    if summary.empty:
        return "<p class=na>No finished trial recorded a value.</p>"
    params = [c for c in summary.columns if c.startswith("p_") and summary[c].notna().any()]
    varying = [c for c in params if summary[c].nunique(dropna=False) > 1]
    fixed = [f"{c[2:]}={_distinct_text(summary[c])}" for c in params if c not in varying]
    cols = (
        ["backend"]
        + (["device_name"] if summary["device_name"].nunique() > 1 else [])
        + varying
        + ["metric"]
        + (["tag"] if summary["tag"].notna().any() else [])
        + ["median", "q25", "q75", "n", "unit"]
    )
    shown = summary[cols].head(_SUMMARY_ROWS)
    head = "".join(f"<th>{_esc(c.removeprefix('p_'))}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{_number(v)}</td>" for v in r) + "</tr>" for r in shown.itertuples(index=False)
    )
    more = (
        f"<p class=na>First {_SUMMARY_ROWS} of {len(summary)} rows; every row is in the Parquet store "
        "(<code>deeperbench compare</code>, pandas).</p>"
        if len(summary) > _SUMMARY_ROWS
        else ""
    )
    return (
        f"<details><summary>Summary: median and IQR over repeats ({len(summary)} rows)</summary>"
        f"<p>Same in every row: {_esc(', '.join(fixed)) or 'nothing'}</p>{more}<table><tr>{head}</tr>{body}</table>"
        "</details>"
    )
