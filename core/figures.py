"""Figures and thesis settings declared as data by a workload; ``results.plots`` draws every one the same way.

A workload lists ``figures`` (a tuple of :class:`Figure`, or :class:`Custom` where a declaration cannot
express the plot) and ``settings`` (a tuple of :class:`Setting`: the thesis' setting of each figure it
reproduces, set beside this run's in the report).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Literal


@dataclasses.dataclass(frozen=True)
class Figure:
    """One plot of medians over repeats (with their interquartile range) of one or more metrics.

    Args:
        title: what the plot shows; the thesis figure is put in front of it when ``thesis`` is set.
        metric: a metric name, or several (each becomes its own line, named by the metric).
        x: the x column of the summary: ``step`` (with ``by_step``), a parameter ``p_<name>``, ``tag``.
        thesis: the thesis figure this reproduces, e.g. ``"Fig. 4.2"``; empty for figures beyond the thesis.
        series: columns whose values name a line and pick its colour (one colour per label across the
            report); the backend is always told apart by dash and marker. Other parameters that vary
            within a panel are added to the label, so no two configurations share a line.
        facet: a column with one panel per value.
        where: keep rows whose column equals the value (or is in it, for a list or tuple).
        by_step: summarise per step (training curves) instead of per trial.
        kind: ``line`` (medians joined, IQR as error bars), ``box`` (five metrics as low, q1, median,
            q3, high of a distribution, per x), or ``bar``.
        log_x, log_y: logarithmic axes.
        x_title, y_title: axis titles; default to the column and the metric with its unit.
        hline: a horizontal reference line (e.g. 1.0 for sums that should be 1).
    """

    title: str
    metric: str | tuple[str, ...]
    x: str
    thesis: str = ""
    series: tuple[str, ...] = ()
    facet: str | None = None
    where: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    by_step: bool = False
    kind: Literal["line", "box", "bar"] = "line"
    log_x: bool = False
    log_y: bool = False
    x_title: str = ""
    y_title: str = ""
    hline: float | None = None

    @property
    def metrics(self) -> tuple[str, ...]:
        """The metric names this figure plots."""
        return (self.metric,) if isinstance(self.metric, str) else tuple(self.metric)


@dataclasses.dataclass(frozen=True)
class Custom:
    """A figure a declaration cannot express: ``draw(table)`` returns a plotly figure, or None to leave it out.

    ``results.plots`` still applies the report's style (colours, units, title with ``thesis``).
    """

    title: str
    draw: Callable[[Any], Any]
    thesis: str = ""


@dataclasses.dataclass(frozen=True)
class Setting:
    """The thesis' setting of one figure beside this run's, so a reader sees how far the run is from it.

    Args:
        figure: the thesis figure, e.g. ``"Fig. 5.2"``.
        thesis: row label (model, data, steps, lr, batch, seeds, device, ...) -> the thesis' value.
        ours: row label -> the column of the rows whose distinct values this run used (``p_lr``,
            ``seed``, ``device_name``); labels missing here read "not recorded".
        where: keep only the rows whose column equals the value (or is in it), as in :class:`Figure`.
    """

    figure: str
    thesis: Mapping[str, str]
    ours: Mapping[str, str]
    where: Mapping[str, Any] = dataclasses.field(default_factory=dict)


LOG_XY: Mapping[str, bool] = MappingProxyType({"log_x": True, "log_y": True})
"""``Figure(..., **LOG_XY)``: both axes logarithmic (a power law reads as a straight line)."""


def per_epoch(title: str, metric: str | tuple[str, ...], **fields: Any) -> Figure:
    """A figure of ``metric`` against the records' step (the epoch), one point per step of each trial.

    Args:
        title: the figure's title.
        metric: the metric (or metrics) drawn.
        **fields: any other field of ``Figure`` (series, facet, where, axes).

    Returns:
        ``Figure(title, metric, x="step", by_step=True, **fields)``.
    """
    return Figure(title, metric=metric, x="step", by_step=True, **fields)


__all__ = ["LOG_XY", "Custom", "Figure", "Setting", "per_epoch"]
