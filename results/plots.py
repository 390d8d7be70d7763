"""Draws every figure a workload declares (``core.figures``) the same way, from ``core.aggregate.summarize``.

Medians over repeats with their interquartile range as error bars; one colour per series label kept
across the whole report (:class:`Styles`, as benchopt's ``get_style``); torch and JAX told apart by
dash and marker so neither hides the other; SI units (bytes as KiB/MiB/GiB, rates per second); integer
ticks on integer axes; the thesis figure in front of every title that reproduces one.
"""

from __future__ import annotations

import html
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from core.aggregate import Summaries, select, summarize
from core.figures import Custom, Figure
from core.workload import Metric
from results import axes

PALETTE = tuple(dict.fromkeys(qualitative.Plotly + qualitative.Dark24))
"""Colours handed out to series labels in order of first use, then reused cyclically."""

BACKEND_STYLES = (
    {"dash": "solid", "symbol": "circle", "size": 7, "pattern": "", "opacity": 0.75},
    {"dash": "dash", "symbol": "diamond-open", "size": 11, "pattern": "/", "opacity": 0.25},
    {"dash": "dot", "symbol": "x-thin-open", "size": 10, "pattern": "x", "opacity": 0.5},
)
"""Per backend (torch, jax, then others): an open, larger marker and a dashed line draw over a solid one visibly."""

_KNOWN_BACKENDS = ("torch", "jax")
_PANEL_HEIGHT_PX = 210
_TITLE_PX = 30
_LEGEND_PX = 310
_FACET_COLUMNS = 4
_TEMPLATE = go.layout.Template(
    layout=dict(
        font=dict(family="system-ui, sans-serif", size=12),
        plot_bgcolor="white",
        paper_bgcolor="white",
        xaxis=dict(showline=True, linecolor="#444", gridcolor="#eee", zeroline=False, ticks="outside"),
        yaxis=dict(showline=True, linecolor="#444", gridcolor="#eee", zeroline=False, ticks="outside"),
        hovermode="closest",
    )
)
"""A small template: plotly's default one adds about 7 kB of JSON to every figure of the report."""


class Styles:
    """One colour per series label, and one dash and marker per backend, kept across every figure of a report."""

    def __init__(self) -> None:
        self._colors: dict[str, str] = {}
        self._backends: dict[str, dict[str, Any]] = {}

    def color(self, label: str) -> str:
        """The colour of ``label``: the same in every figure drawn with these styles."""
        return self.colors([label])[label]

    def colors(self, labels: Iterable[str]) -> dict[str, str]:
        """Colours of labels drawn together: known labels keep theirs; each new one takes the least used
        colour that no other label of this figure has (the palette repeats only when it must)."""
        labels = list(dict.fromkeys(labels))
        taken = {self._colors[label] for label in labels if label in self._colors}
        for label in labels:
            if label not in self._colors:
                uses = Counter(self._colors.values())
                free = [c for c in PALETTE if c not in taken] or list(PALETTE)
                self._colors[label] = min(free, key=lambda c: (uses[c], PALETTE.index(c)))
                taken.add(self._colors[label])
        return {label: self._colors[label] for label in labels}

    def backend(self, backend: str) -> dict[str, Any]:
        """Dash, marker symbol and size, bar pattern and box fill opacity of ``backend``."""
        if backend not in self._backends:
            fixed = {b: BACKEND_STYLES[i] for i, b in enumerate(_KNOWN_BACKENDS)}
            others = len([b for b in self._backends if b not in fixed])
            self._backends[backend] = fixed.get(backend) or BACKEND_STYLES[(len(fixed) + others) % len(BACKEND_STYLES)]
        return self._backends[backend]


def title_of(title: str, thesis: str) -> str:
    """The title with the thesis figure in front, e.g. ``Fig. 4.2: memory vs depth``."""
    return f"{thesis}: {title}" if thesis and not title.startswith(thesis) else title


def draw(
    declaration: Figure | Custom,
    table: pd.DataFrame,
    metrics: Sequence[Metric],
    styles: Styles | None = None,
    summaries: Summaries | None = None,
) -> go.Figure | None:
    """The plotly figure of ``declaration`` from a workload's rows, or None when no row feeds it.

    Args:
        declaration: a :class:`~core.figures.Figure` or :class:`~core.figures.Custom`.
        table: the workload's rows as the store reads them (every status; only ok rows are drawn).
        metrics: the workload's declared metrics (how each reduces, its unit).
        styles: the report's styles; a fresh set when None.
        summaries: the summaries of ``table`` shared by the report's figures (each trial reduced
            once); None summarises ``table`` for this figure alone. Either way the figure is the same.

    Returns:
        The figure, or None when the rows it needs are missing.
    """
    styles = styles or Styles()
    if isinstance(declaration, Custom):
        fig = declaration.draw(table)
        if fig is None or not fig.data:
            return None
        return finish(fig, title_of(declaration.title, declaration.thesis), styles)
    return _draw_declared(declaration, table, metrics, styles, summaries)


def finish(fig: go.Figure, title: str, styles: Styles, *, height: int | None = None) -> go.Figure:
    """Apply the report's style to a figure drawn elsewhere (a ``Custom``, an Optuna plot).

    Traces that set no colour of their own get their name's colour from ``styles``; tick labels use
    powers of ten (SI prefixes where a unit is known), never "B" for billion. ``height`` is the
    figure's height below its title.
    """
    for trace in fig.data:
        if trace.type in ("scatter", "bar", "box") and trace.name and not _has_color(trace):
            color = styles.color(trace.name)
            trace.update(marker_color=color) if trace.type == "bar" else trace.update(line_color=color)
    below = height or max((fig.layout.height or _PANEL_HEIGHT_PX + 120) - _TITLE_PX, 200)
    fig.update_layout(
        template=_TEMPLATE,
        title=dict(text=title, font=dict(size=13), x=0.01, xanchor="left"),
        height=below + _TITLE_PX,
        margin=dict(l=10, r=10, t=_TITLE_PX, b=10),
        legend=dict(font=dict(size=10.5)),
    )
    fig.update_xaxes(exponentformat="power", automargin=True)
    fig.update_yaxes(exponentformat="power", automargin=True)
    named = sum(1 for t in fig.data if t.name and t.showlegend is not False)
    if height is None and fig.layout.legend.orientation is None and named > 1:  # drawn elsewhere: legend below
        rows = math.ceil(named / 3)
        fig.update_layout(
            legend=dict(orientation="h", yanchor="top", y=-0.2, x=0),
            margin_b=60 + 18 * rows,
            height=fig.layout.height + 50 + 18 * rows,
        )
    return fig


def embed(fig: go.Figure) -> str:
    """The figure as an HTML fragment for the report's grid (plotly.js is included once, by the page).

    The title becomes HTML above the plot, where it wraps to the cell's width (plotly clips titles of
    several lines); a figure with several panels spans as many grid columns (at most four). No mode
    bar, which would cover the panel titles of a small figure: dragging zooms, a double click resets.
    """
    panels = sum(1 for key in fig.layout if key.startswith("xaxis"))
    wide = f" span{min(panels, _FACET_COLUMNS)}" if panels > 1 else ""
    title = fig.layout.title.text or ""
    shown = go.Figure(fig)
    top = 26 if fig.layout.annotations else 8  # panel titles sit above the panels
    shown.update_layout(title_text=None, margin_t=top, height=(fig.layout.height or 450) - _TITLE_PX + top)
    return (
        f"<div class='fig{wide}'><div class=figtitle>{html.escape(title)}</div>"
        + shown.to_html(
            full_html=False,
            include_plotlyjs=False,
            default_width="100%",
            default_height=f"{shown.layout.height}px",
            config={"displayModeBar": False, "responsive": True},
        )
        + "</div>"
    )


def _has_color(trace: Any) -> bool:
    marker = getattr(trace, "marker", None)
    line = getattr(trace, "line", None)
    return bool((marker is not None and marker.color is not None) or (line is not None and line.color is not None))


def _where(df: pd.DataFrame, where: dict[str, Any], columns: Iterable[str]) -> pd.DataFrame:
    return select(df, {c: where[c] for c in columns})


def _summary(
    decl: Figure, table: pd.DataFrame, metrics: Sequence[Metric], summaries: Summaries | None = None
) -> pd.DataFrame:
    """The summary rows ``decl`` draws: its metrics, ``where`` applied (before summarising where it can)."""
    known = {m.name: m for m in metrics}
    unknown = [m for m in decl.metrics if m not in known]
    if unknown:
        raise ValueError(
            f"figure '{decl.title}': metric(s) {', '.join(unknown)} not declared; declared: {', '.join(known)}"
        )
    early = [c for c in decl.where if c in table.columns]
    chosen = [known[m] for m in decl.metrics]
    if summaries is not None and summaries.rows is table:
        summary = summaries.summarize(chosen, by_step=decl.by_step, where={c: decl.where[c] for c in early})
    else:
        summary = summarize(_where(table, dict(decl.where), early), chosen, by_step=decl.by_step)
    late = [c for c in decl.where if c not in early]
    absent = [
        c for c in (*late, decl.x, *decl.series, *([decl.facet] if decl.facet else [])) if c not in summary.columns
    ]
    if absent and not summary.empty:
        raise ValueError(
            f"figure '{decl.title}': column(s) {', '.join(absent)} are neither in the rows nor in "
            f"the summary; columns: {', '.join(summary.columns)}"
        )
    summary = _where(summary, dict(decl.where), late)
    summary = summary[summary[decl.x].notna()] if not summary.empty else summary
    return summary.assign(backend=summary["backend"].fillna("")) if not summary.empty else summary


def _draw_declared(
    decl: Figure, table: pd.DataFrame, metrics: Sequence[Metric], styles: Styles, summaries: Summaries | None = None
) -> go.Figure | None:
    summary = _summary(decl, table, metrics, summaries)
    if summary.empty:
        return None
    unit, scale, unit_text = axes.unit_scale(summary, decl)
    summary[["median", "q25", "q75"]] = summary[["median", "q25", "q75"]] / scale
    facets = sorted(summary[decl.facet].dropna().unique(), key=sort_key) if decl.facet else [None]
    labels = _label_columns(summary, decl)
    styles.colors(
        sorted(
            {
                _label(row, labels, decl) or decl.metrics[0]
                for _, row in summary.drop_duplicates(labels or ["backend"]).iterrows()
            }
        )
    )
    n_rows, n_cols = math.ceil(len(facets) / _FACET_COLUMNS), min(len(facets), _FACET_COLUMNS)
    fig = (
        make_subplots(
            rows=n_rows,
            cols=n_cols,
            subplot_titles=[_value_text(decl.facet, f) for f in facets],
            horizontal_spacing=0.07,
            vertical_spacing=min(0.3, 70 / (_PANEL_HEIGHT_PX * n_rows)),
        )
        if decl.facet
        else go.Figure()
    )
    for i, facet in enumerate(facets):
        panel = summary if facet is None else summary[summary[decl.facet] == facet]
        where = dict(row=i // _FACET_COLUMNS + 1, col=i % _FACET_COLUMNS + 1) if decl.facet else {}
        for trace in _traces(panel, decl, labels, styles):
            fig.add_trace(trace, **where)
    entries = _legend(fig, summary, decl, labels, styles)
    if decl.hline is not None:
        fig.add_hline(
            y=decl.hline / scale,
            line_dash="dot",
            line_color="#888",
            **({"row": "all", "col": "all"} if decl.facet else {}),
        )
    bottom = 48 + 19 * _legend_rows(entries, columns=n_cols)
    finish(fig, title_of(decl.title, decl.thesis), styles, height=_PANEL_HEIGHT_PX * n_rows + bottom)
    fig.update_layout(
        margin=dict(b=bottom),
        showlegend=bool(entries),
        legend=dict(
            orientation="h", yanchor="top", x=0, y=-44 / (_PANEL_HEIGHT_PX * n_rows), tracegroupgap=0, itemwidth=30
        ),
    )
    if decl.kind in ("bar", "box"):
        fig.update_layout(barmode="group", boxmode="group")
    axes.style(fig, decl, summary, unit, scale, unit_text, n_rows)
    return fig


def sort_key(value: Any) -> tuple:
    """Numbers before strings, each in their natural order (for facets, x categories, lists of values)."""
    number = isinstance(value, (int, float, np.number)) and not isinstance(value, (bool, np.bool_))
    return (0, value, "") if number else (1, 0, str(value))


def _value_text(column: str | None, value: Any) -> str:
    """A value as a label: strings bare, numbers and flags with their column name (``lr=0.01``)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (float, np.floating)) and not float(value).is_integer():
        text = f"{float(value):.4g}"
    elif isinstance(value, (int, float, np.number)) and not isinstance(value, (bool, np.bool_)):
        text = f"{int(value)}"
    else:
        text = str(value)
    return f"{axes.column_text(column)}={text}" if column else text


def _label_columns(summary: pd.DataFrame, decl: Figure) -> list[str]:
    """The series columns, the metric when there are several, and each other column that varies within a line.

    A column varies within a line when two summary rows of one (label, backend, panel, x) differ in
    it; such columns join the label, so no two configurations share a line.
    """
    label = list(decl.series) + (["metric"] if len(decl.metrics) > 1 and decl.kind != "box" else [])
    fixed = (
        label + ["backend", decl.x] + ([decl.facet] if decl.facet else []) + (["metric"] if decl.kind == "box" else [])
    )
    candidates = (
        ["device_name"]
        + sorted(c for c in summary.columns if c.startswith("p_"))
        + ["tag"]
        + (["step"] if decl.by_step and decl.x != "step" else [])
    )
    extra: list[str] = []
    for column in candidates:
        if column in fixed or column not in summary.columns:
            continue
        groups = summary.groupby(fixed + extra, dropna=False)[column]
        if (groups.nunique(dropna=False) > 1).any():
            extra.append(column)
    return label + extra


def _label(row: pd.Series, columns: Sequence[str], decl: Figure) -> str:
    parts = []
    for column in columns:
        value = row[column]
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        named = column not in decl.series and column not in ("metric", "tag", "device_name")
        parts.append(f"{axes.column_text(column)}={_value_text(None, value)}" if named else _value_text(column, value))
    return ", ".join(parts)


def _traces(panel: pd.DataFrame, decl: Figure, labels: list[str], styles: Styles) -> list[Any]:
    keys = labels + ["backend"]
    groups = [g for _, g in panel.groupby(keys, dropna=False, sort=False)]
    groups.sort(key=lambda g: (_backend_rank(g["backend"].iloc[0]), _label(g.iloc[0], labels, decl)))
    traces = []
    for group in groups:
        first = group.iloc[0]
        label = _label(first, labels, decl)
        backend = first["backend"]
        color = styles.color(label or decl.metrics[0])
        look = styles.backend(backend)
        name = f"{label} ({backend})" if label and backend else (label or backend or decl.metrics[0])
        if decl.kind == "box":
            traces.append(_box(group, decl, name, color, look))
            continue
        group = group.sort_values(decl.x, key=lambda s: s.map(sort_key))
        y, lo, hi = (_round(group[c]) for c in ("median", "q25", "q75"))
        error = dict(type="data", symmetric=False, array=hi - y, arrayminus=y - lo, color=color, thickness=1.2, width=3)
        hover = (
            f"{name}<br>{axes.column_text(decl.x)}=%{{x}}<br>median %{{y}} "
            "[IQR %{customdata[0]:.4g} - %{customdata[1]:.4g}]<br>n=%{customdata[2]}<extra></extra>"
        )
        common = dict(
            x=group[decl.x].tolist(),
            y=y,
            error_y=error,
            name=name,
            legendgroup=label or name,
            showlegend=False,
            customdata=np.column_stack([lo, hi, group["n"]]),
            hovertemplate=hover,
        )
        if decl.kind == "bar":
            traces.append(go.Bar(marker=dict(color=color, pattern_shape=look["pattern"], line_color=color), **common))
        else:
            traces.append(
                go.Scatter(
                    mode="lines+markers",
                    line=dict(color=color, dash=look["dash"], width=2),
                    marker=dict(color=color, symbol=look["symbol"], size=look["size"]),
                    **common,
                )
            )
    return traces


def _backend_rank(backend: str) -> tuple[int, str]:
    """torch first, then JAX, then others: JAX's open markers and dashes are drawn over torch's."""
    return (_KNOWN_BACKENDS.index(backend) if backend in _KNOWN_BACKENDS else len(_KNOWN_BACKENDS), backend)


def _legend(fig: go.Figure, summary: pd.DataFrame, decl: Figure, labels: list[str], styles: Styles) -> list[str]:
    """Legend-only entries: one per label in its colour, one per backend in its dash and marker; their names.

    Each line is named by both in its hover text; the legend lists each once, which keeps it short.
    """
    names = sorted(
        {_label(row, labels, decl) for _, row in summary.drop_duplicates(labels or ["backend"]).iterrows()}
        if labels
        else set(),
        key=str,
    )
    backends = sorted(set(summary["backend"]), key=_backend_rank)
    entries = []
    if names:
        for name in names:
            color = styles.color(name)
            fig.add_trace(
                go.Scatter(
                    x=[None],
                    y=[None],
                    mode="lines",
                    name=name,
                    legendgroup=name,
                    meta="legend",
                    line=dict(color=color, width=3),
                    hoverinfo="skip",
                )
            )
            entries.append(name)
    if len(backends) > 1 or not entries:
        for backend in backends:
            look = styles.backend(backend)
            solo = not names or len(names) == 1
            color = styles.color(names[0] if names else decl.metrics[0]) if solo else "#555"
            fig.add_trace(
                go.Scatter(
                    x=[None],
                    y=[None],
                    mode="lines+markers",
                    name=backend or decl.metrics[0],
                    meta="legend",
                    legendgroup=f"backend {backend}",
                    hoverinfo="skip",
                    line=dict(color=color, dash=look["dash"], width=2),
                    marker=dict(color=color, symbol=look["symbol"], size=look["size"]),
                )
            )
            entries.append(backend)
    if decl.facet:  # legend proxies sit in the first panel, which they do not change
        for trace in fig.data:
            if trace.meta == "legend":
                trace.update(xaxis="x", yaxis="y")
    return entries


def _legend_rows(entries: list[str], *, columns: int) -> int:
    """Rows a horizontal legend of ``entries`` takes (about 6.5 px per character plus the symbol)."""
    width, rows, used = _LEGEND_PX * columns, 0, math.inf
    for entry in entries:
        need = 45 + 6.5 * len(entry)
        if used + need > width:
            rows, used = rows + 1, 0.0
        used += need
    return rows


def _round(values: pd.Series) -> np.ndarray:
    """Values to 5 significant digits: the report carries no more than it can show, which keeps it small."""
    v = values.to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        digits = np.where(np.isfinite(v) & (v != 0), 4 - np.floor(np.log10(np.abs(v))), 0).astype(int)
    return np.array([round(a, d) if np.isfinite(a) else a for a, d in zip(v, digits)])


def _box(group: pd.DataFrame, decl: Figure, name: str, color: str, look: dict[str, Any]) -> go.Box:
    """One box per x from five metrics: low, q1, median, q3, high (each the median over repeats)."""
    if len(decl.metrics) != 5:
        raise ValueError(
            f"figure '{decl.title}': a box needs five metrics (low, q1, median, q3, high), got {len(decl.metrics)}"
        )
    wide = group.pivot_table(index=decl.x, columns="metric", values="median", aggfunc="first")
    wide = wide.reindex(columns=list(decl.metrics)).dropna()
    wide = wide.loc[sorted(wide.index, key=sort_key)]
    low, q1, median, q3, high = (_round(wide[m]) for m in decl.metrics)
    return go.Box(
        x=list(wide.index),
        lowerfence=low,
        q1=q1,
        median=median,
        q3=q3,
        upperfence=high,
        name=name,
        legendgroup=name,
        showlegend=False,
        line=dict(color=color),
        marker=dict(color=color),
        fillcolor=_with_opacity(color, look["opacity"]),
    )


def _with_opacity(color: str, opacity: float) -> str:
    r, g, b = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{opacity})"


def median_lines(summary: pd.DataFrame, x: str, label: Any, *, x_title: str, y_title: str) -> go.Figure:
    """For a ``Custom`` figure: one line per configuration of a summary, medians at ``x`` with IQR error bars.

    ``label(row)`` names a configuration; the backend and device are added to it.
    """
    fig = go.Figure()
    for (backend, device, _), g in summary.groupby(["backend", "device_name", "params"], sort=False):
        g = g.sort_values(x)
        fig.add_trace(
            go.Scatter(
                x=g[x],
                y=g["median"],
                mode="lines+markers",
                name=f"{label(g.iloc[0])} ({backend}, {device})",
                error_y=dict(
                    type="data", symmetric=False, array=g["q75"] - g["median"], arrayminus=g["median"] - g["q25"]
                ),
            )
        )
    fig.update_layout(xaxis_title=x_title, yaxis_title=y_title)
    return fig


__all__ = ["PALETTE", "Styles", "draw", "embed", "finish", "median_lines", "sort_key", "title_of"]
