"""Axes of the report's figures: units with SI or binary prefixes, log ticks, integer ticks, titles."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from core.figures import Figure

DIMENSIONLESS = ("", "1", "fraction")
"""Units whose axes read better as powers of ten (1e-15) than with SI prefixes (1f)."""
_BYTE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def column_text(column: str) -> str:
    """A column as an axis or label names it: ``p_depth`` -> ``depth``."""
    return column.removeprefix("p_")


def style(
    fig: go.Figure, decl: Figure, summary: pd.DataFrame, unit: str, scale: float, unit_text: str, n_rows: int
) -> None:
    """Log axes, units, prefixes and ticks; titles on the outer panels."""
    if unit_text not in DIMENSIONLESS:
        fig.update_yaxes(exponentformat="SI")
    fig.update_yaxes(type="log" if decl.log_y else None)
    fig.update_xaxes(type="log" if decl.log_x else None)
    _value_axis(fig, summary, unit, scale, decl.log_y)
    _x_axis(fig, summary[decl.x], decl.log_x)
    if decl.log_y and fig.layout.yaxis.tickvals is None:
        values = summary[["median", "q25", "q75"]].to_numpy(dtype=float)
        ticks = _log_ticks(values)
        fig.update_yaxes(tickvals=ticks) if ticks else fig.update_yaxes(dtick=_decades(values))
    fig.update_xaxes(
        title_text=decl.x_title or column_text(decl.x), title_standoff=4, **({"row": n_rows} if decl.facet else {})
    )
    fig.update_yaxes(title_text=_y_title(decl, unit_text, scale), **({"col": 1} if decl.facet else {}))


def unit_scale(summary: pd.DataFrame, decl: Figure) -> tuple[str, float, str]:
    """The metric's unit, the factor values are divided by, and the unit as the axis says it.

    Bytes take the binary prefix that keeps the largest value in [1, 1024) on a linear axis; on a
    log axis values stay in bytes and the ticks are labelled with prefixes instead.
    """
    units = sorted(set(summary["unit"].dropna()))
    unit = units[0] if len(units) == 1 else ""
    base, per = (unit.split("/", 1) + [""])[:2] if unit else ("", "")
    if base not in ("B", "bytes") or decl.log_y:
        return unit, 1.0, unit
    largest = float(np.nanmax(np.abs(summary[["median", "q75"]].to_numpy(dtype=float))) or 1.0)
    power = int(min(max(math.floor(math.log(largest, 1024)), 0), len(_BYTE_UNITS) - 1)) if largest > 0 else 0
    return unit, float(1024**power), _BYTE_UNITS[power] + (f"/{per}" if per else "")


def _y_title(decl: Figure, unit_text: str, scale: float) -> str:
    """The declared title or the metric's name, with the unit the axis is in (always when values were scaled)."""
    name = decl.y_title or (decl.metrics[0] if len(decl.metrics) == 1 or decl.kind == "box" else "value")
    if decl.kind == "box" and not decl.y_title:
        name = name.rsplit("_", 1)[0]
    states_unit = decl.y_title and ("[" in decl.y_title or "(" in decl.y_title)
    if unit_text in DIMENSIONLESS or (states_unit and scale == 1.0):
        return name
    return f"{name} [{unit_text}]"


def _value_axis(fig: go.Figure, summary: pd.DataFrame, unit: str, scale: float, log: bool) -> None:
    """Bytes on a log axis: ticks at powers of two labelled KiB, MiB, GiB."""
    base, per = (unit.split("/", 1) + [""])[:2] if unit else ("", "")
    if base not in ("B", "bytes") or not log:
        return
    values = summary[["median", "q25", "q75"]].to_numpy(dtype=float).ravel()
    values = values[np.isfinite(values) & (values > 0)]
    if values.size == 0:
        return
    low, high = math.floor(math.log2(values.min())), math.ceil(math.log2(values.max()))
    step = max(1, math.ceil((high - low + 1) / 8))
    exponents = range(low, high + 1, step)
    fig.update_yaxes(
        tickvals=[2.0**e for e in exponents],
        ticktext=[format_bytes(2.0**e) + (f"/{per}" if per else "") for e in exponents],
    )


def format_bytes(value: float) -> str:
    """Bytes with a binary prefix: ``1.5 MiB``."""
    power = min(max(math.floor(math.log(value, 1024)), 0), len(_BYTE_UNITS) - 1) if value >= 1 else 0
    scaled = value / 1024**power
    return f"{scaled:.3g} {_BYTE_UNITS[power]}"


def _log_ticks(values: np.ndarray) -> list[float] | None:
    """Ticks at 1, 2 and 5 times powers of ten for a log axis spanning under two decades, where plotly
    would label every digit; None (plotly's own powers of ten) for wider spans."""
    values = values[np.isfinite(values) & (values > 0)]
    if not values.size or np.log10(values.max() / values.min()) >= 2:
        return None
    low, high = math.floor(math.log10(values.min())), math.ceil(math.log10(values.max()))
    ticks = [m * 10.0**e for e in range(low, high + 1) for m in (1, 2, 5)]
    inside = [t for t in ticks if values.min() / 1.5 <= t <= values.max() * 1.5]
    return inside if len(inside) >= 2 else None


def _decades(values: np.ndarray) -> int:
    """A log axis' tick step in decades: a label every power of ten, fewer past six decades (no 2s and 5s)."""
    values = values[np.isfinite(values) & (values > 0)]
    span = np.log10(values.max() / values.min()) if values.size else 1.0
    return max(1, math.ceil(span / 6))


def _x_axis(fig: go.Figure, x: pd.Series, log: bool) -> None:
    """Integer axes get integer ticks: at each value when there are few, else whole numbers only; log axes
    a label per power of ten."""
    if x.dtype == object or x.dtype == bool or not pd.api.types.is_numeric_dtype(x):
        fig.update_xaxes(type="category" if not log else None)
        return
    values = np.sort(x.dropna().unique().astype(float))
    integral = np.all(np.isfinite(values)) and np.all(values == np.round(values))
    if integral and len(values) <= 10:
        fig.update_xaxes(tickmode="array", tickvals=values.tolist(), ticktext=[_int_text(v) for v in values])
    elif log:
        fig.update_xaxes(dtick=_decades(values))
    elif integral:
        fig.update_xaxes(tickformat="d", dtick=max(1, math.ceil((values[-1] - values[0]) / 10)))


def _int_text(value: float) -> str:
    """An integer tick: SI-abbreviated from 10,000 on (10k, 1M), plain below."""
    v = int(value)
    for div, suffix in ((10**9, "G"), (10**6, "M"), (10**3, "k")):
        if abs(v) >= 10 * div if suffix == "k" else abs(v) >= div:
            return f"{v / div:g}{suffix}"
    return str(v)


__all__ = ["DIMENSIONLESS", "column_text", "format_bytes", "style", "unit_scale"]
