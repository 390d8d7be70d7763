"""``deeperbench compare``: one metric across backends (or devices, workloads, a parameter), or against
a baseline run, as medians over repeats with ratios; as a terminal table, Markdown, CSV or JSON.

Every workload in the results that declares the metric contributes its rows (a ``workload``
column tells them apart): nothing recorded is left out.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pandas as pd

from core.aggregate import summarize
from core.errors import UserError
from core.registry import WORKLOADS, did_you_mean
from core.workload import Metric
from results.store import Store

BY = ("backend", "device_kind", "device_name", "workload", "tag")
"""Columns ``--by`` may name besides the parameters (``p_<name>``, or just ``<name>``) present."""

FORMATS = ("table", "markdown", "csv", "json")

_KEYS = ("workload", "backend", "device_kind", "device_name", "config", "tag")


@dataclasses.dataclass
class Comparison:
    """A metric's medians, one row per configuration, with the columns to compare and their ratios."""

    table: pd.DataFrame
    metric: str
    declared: dict[str, Metric]
    """The metric as each workload present declares it."""
    values: list[str]
    ratios: list[str]

    @property
    def title(self) -> str:
        """What the numbers are: metric, unit, direction, reduction; plain text (never markup)."""

        def one(attr: str) -> str:
            return "/".join(sorted({str(getattr(m, attr)) for m in self.declared.values()}))

        return (
            f"{self.metric} [{one('unit')}], {one('direction')} is better, {one('reduce')} per trial, "
            f"median over repeats; workloads: {', '.join(sorted(self.declared))}"
        )

    def worse_than(self, threshold: float) -> pd.Series:
        """Rows whose ratio to the baseline is worse than ``threshold`` in their metric's direction."""
        ratio = self.table["ratio"]
        lower = self.table["workload"].map(lambda w: self.declared[w].direction == "lower")
        return ((ratio > threshold) & lower) | ((ratio < 1.0 / threshold) & ~lower)


def _read(out: str) -> pd.DataFrame:
    df = Store(out).read().to_pandas()
    if df.empty:
        raise UserError(f"DIR: no results under '{out}'")
    return df


def _declared(df: pd.DataFrame, metric: str, workload: str | None) -> dict[str, Metric]:
    """Workload -> declaration, for every workload in ``df`` (or only ``workload``) that declares ``metric``."""
    present = sorted(w for w in df["workload"].dropna().unique() if w in WORKLOADS)
    if workload is not None:
        if workload not in present:
            raise UserError(
                f"--workload: no results of '{workload}' here; allowed: {', '.join(present)}"
                f"{did_you_mean(workload, present)}"
            )
        present = [workload]
    known: dict[str, dict[str, Metric]] = {}
    for name in present:
        for m in WORKLOADS.get(name).metrics:
            known.setdefault(m.name, {})[name] = m
    if metric not in known:
        names = sorted(known)
        raise UserError(
            f"--metric: '{metric}' is not a metric of the results here; allowed: {', '.join(names)}"
            f"{did_you_mean(metric, names)}"
        )
    return known[metric]


def _summary(out: str, metric: str, workload: str | None) -> tuple[pd.DataFrame, dict[str, Metric]]:
    """Median, IQR and count over repeats per workload, configuration and tag, for ``metric``."""
    df = _read(out)
    declared = _declared(df, metric, workload)
    parts = []
    for name, m in declared.items():
        part = summarize(df[df["workload"] == name], [m])
        parts.append(part[part["metric"] == metric].assign(workload=name))
    summary = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if summary.empty:
        raise UserError(f"--metric: no ok trial recorded '{metric}' under '{out}'")
    return summary, declared


def by_columns(summary: pd.DataFrame) -> list[str]:
    """The columns ``--by`` may name for this summary: those of ``BY`` and the parameters with a value."""
    have = [c for c in BY if c in summary and summary[c].notna().any()]
    return have + sorted(c for c in summary.columns if c.startswith("p_") and summary[c].notna().any())


def _config(params: str, drop: str | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in json.loads(params).items() if f"p_{k}" != drop)


def _label(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _order(value: str) -> tuple[int, float, str]:
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


def _index(summary: pd.DataFrame, exclude: str | None = None) -> list[str]:
    """The key columns that say something here (a column empty everywhere is left out).

    Compared across backends or device kinds, the device's name goes with the column (torch and
    JAX name the same CPU differently), so it is no key then.
    """
    drop = {exclude} | ({"device_name"} if exclude in ("backend", "device_kind") else set())
    return [c for c in _KEYS if c not in drop and (summary[c] != "").any()]


def _keyed(summary: pd.DataFrame, drop: str | None = None) -> pd.DataFrame:
    out = summary.copy()
    out["config"] = out["params"].map(lambda p: _config(p, drop))
    for c in _KEYS:
        out[c] = out[c].map(lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v)) else _label(v))
    return out


def compare(out: str, metric: str, by: str = "backend", workload: str | None = None) -> Comparison:
    """Median of ``metric`` per configuration, one column per value of ``by``, each value's ratio to the first."""
    summary, declared = _summary(out, metric, workload)
    allowed = by_columns(summary)
    column = by if by in allowed or f"p_{by}" not in allowed else f"p_{by}"
    if column not in allowed:
        raise UserError(
            f"--by: no column '{by}' in the results of {metric}; allowed: {', '.join(allowed)}"
            f"{did_you_mean(by, allowed)}"
        )
    keyed = _keyed(summary, drop=column if column.startswith("p_") else None)
    keyed["_by"] = keyed[column].map(lambda v: "" if pd.isna(v) else _label(v)).replace("", "(none)")
    index = _index(keyed, exclude=column)
    wide = keyed.pivot_table(index=index, columns="_by", values="median", aggfunc="first").reset_index()
    wide.columns.name = None
    values = sorted(keyed["_by"].unique(), key=_order)
    wide = wide[index + values]
    ratios = []
    for other in values[1:]:
        wide[f"{other}/{values[0]}"] = wide[other] / wide[values[0]]
        ratios.append(f"{other}/{values[0]}")
    return Comparison(wide, metric, declared, values, ratios)


def against_baseline(out: str, baseline: str, metric: str, workload: str | None = None) -> Comparison:
    """Median of ``metric`` here and in ``baseline`` per configuration, and their ratio (rows of either run kept)."""
    now, declared = _summary(out, metric, workload)
    before, _ = _summary(baseline, metric, workload)
    now, before = _keyed(now), _keyed(before)
    keys = [c for c in _KEYS if c != "device_name"]  # another machine of the same kind is the point of a baseline
    joined = now[keys + ["median"]].merge(before[keys + ["median"]], on=keys, how="outer", suffixes=("", "_baseline"))
    joined["ratio"] = joined["median"] / joined["median_baseline"]
    index = [c for c in keys if (joined[c] != "").any()]
    table = joined[index + ["median", "median_baseline", "ratio"]].sort_values(index, kind="stable")
    return Comparison(table.reset_index(drop=True), metric, declared, ["median", "median_baseline"], ["ratio"])


def _cell(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def to_markdown(c: Comparison) -> str:
    """A GitHub-flavoured Markdown table under the title in bold (``|`` escaped in cells)."""

    def row(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    lines = [f"**{c.title}**", "", row([str(col) for col in c.table.columns]), row(["---"] * len(c.table.columns))]
    lines += [row([_cell(v) for v in r]) for r in c.table.itertuples(index=False)]
    return "\n".join(lines)


def to_csv(c: Comparison) -> str:
    """The table as CSV with full precision (no title: the columns say what they are)."""
    return c.table.to_csv(index=False)


def to_json(c: Comparison) -> str:
    """``{"metric", "title", "declared", "values", "ratios", "rows"}``; missing values are null."""
    declared = {w: dataclasses.asdict(m) for w, m in c.declared.items()}
    rows = json.loads(c.table.to_json(orient="records"))
    return json.dumps(
        {
            "metric": c.metric,
            "title": c.title,
            "declared": declared,
            "values": c.values,
            "ratios": c.ratios,
            "rows": rows,
        },
        indent=2,
    )


def to_rich(c: Comparison):
    """A rich Table; the title and every cell are plain Text, so ``[s]`` is never read as markup."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(c.title))
    for col in c.table.columns:
        table.add_column(Text(str(col)), justify="right" if col in c.values + c.ratios else "left")
    for r in c.table.itertuples(index=False):
        table.add_row(*(Text(_cell(v)) for v in r))
    return table
