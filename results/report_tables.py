"""The report's tables about the run as a whole: what ran (trials, statuses, devices, versions,
duration), the trials that did not finish, and the environment and device limits.

Each stays small however many trials there are: environments are parsed once per distinct JSON
text, and past ``UNFINISHED_ROWS`` unfinished trials the listing keeps its first rows and counts
the rest per workload, status and first line of the error.
"""

from __future__ import annotations

import html
import json
from collections import Counter
from typing import Any

import pandas as pd

from core.aggregate import ok_rows
from results import axes

BAD_STATUSES = ("failed", "crashed", "oom", "timeout")
UNFINISHED_ROWS = 300
"""Unfinished trials listed one by one; beyond them, counts per workload, status and error."""


def esc(value: Any) -> str:
    return html.escape("" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value))


def _kv_table(rows: list[tuple[str, str]]) -> str:
    return "<table class=kv>" + "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return " ".join(f"{v} {u}" for v, u in ((h, "h"), (m, "min"), (s, "s")) if v) or "0 s"


def _envs(df: pd.DataFrame) -> pd.DataFrame:
    """One row per trial with its environment JSON parsed into columns (each distinct text parsed once)."""
    trials = df.drop_duplicates("trial_key")
    codes, texts = pd.factorize(trials["env"])
    dicts = [json.loads(e) if isinstance(e, str) and e else {} for e in texts]
    if (codes < 0).any():  # no environment recorded: an empty one, at code -1
        dicts.append({})
    parsed = pd.DataFrame(dicts).iloc[codes] if dicts else pd.DataFrame(index=range(len(trials)))
    parsed.index = trials.index
    return pd.concat([trials[["backend", "device_kind", "device_name", "host", "workload"]], parsed], axis=1)


_VERSIONS = (
    ("Python", "python"),
    ("torch", "torch"),
    ("JAX", "jax"),
    ("jaxlib", "jaxlib"),
    ("Ray", "ray"),
    ("numpy", "numpy"),
    ("pyarrow", "pyarrow"),
)


def run_html(df: pd.DataFrame) -> str:
    """Trials, statuses, devices, versions and duration of the run, in a few lines."""
    trials = df.drop_duplicates("trial_key")
    counts = Counter(trials["status"])
    statuses = " ".join(
        f"<span class='chip {'fails' if s in BAD_STATUSES else ''}'>{esc(s)} {n}</span>"
        for s, n in counts.most_common()
    )
    devices = (
        trials.dropna(subset=["device_name"])
        .groupby("device_kind")["device_name"]
        .agg(lambda v: ", ".join(sorted(set(v))))
    )
    envs = _envs(df)
    versions = [
        f"{label} {', '.join(sorted(set(envs[key].dropna().astype(str))))}"
        for label, key in _VERSIONS
        if key in envs and envs[key].notna().any()
    ]
    start = trials["started_at"].min()
    end = (trials["started_at"] + pd.to_timedelta(trials["duration_s"].fillna(0), unit="s")).max()
    rows = [
        (
            "trials",
            f"{len(trials)} in {trials['sweep'].nunique()} sweep(s), {trials['workload'].nunique()} "
            f"workload(s), {trials['run_id'].nunique()} run(s)",
        ),
        ("statuses", statuses),
        ("devices", "; ".join(f"{esc(k)}: {esc(v)}" for k, v in devices.items()) or "none recorded"),
        ("versions", esc(" · ".join(versions)) or "none recorded"),
    ]
    if pd.notna(start):
        rows.append(
            (
                "duration",
                f"{_duration((end - start).total_seconds())} from the first trial's start to the "
                f"last one's end ({start:%Y-%m-%d %H:%M} UTC); "
                f"{_duration(trials['duration_s'].sum())} of trial time",
            )
        )
    return _kv_table(rows)


def _params_text(params: Any) -> str:
    try:
        return ", ".join(f"{k}={v}" for k, v in json.loads(params).items() if v is not None)
    except (TypeError, ValueError):
        return str(params)


def unfinished_html(df: pd.DataFrame) -> str:
    """Failed, crashed, oom and timeout trials with their full error; skipped trials with their reason, collapsed."""
    trials = df.drop_duplicates("trial_key")
    bad = trials[trials["status"].isin(BAD_STATUSES)].sort_values(["workload", "status"])
    parts = []
    if bad.empty:
        parts.append("<p class=holds>Every trial finished.</p>")
    else:
        rows = []
        for r in bad.head(UNFINISHED_ROWS).itertuples():
            error = str(r.error or "").strip()
            first, _, rest = error.partition("\n")
            full = f"<details><summary>{esc(first)}</summary><pre>{esc(rest)}</pre></details>" if rest else esc(first)
            rows.append(
                f"<tr><td>{esc(r.workload)}</td><td>{esc(r.sweep)}</td><td>{esc(r.backend)}</td>"
                f"<td>{esc(r.device_kind)}</td><td>{esc(_params_text(r.params))}</td>"
                f"<td class=fails>{esc(r.status)}</td><td>{full}</td></tr>"
            )
        parts.append(
            "<table><tr><th>workload</th><th>sweep</th><th>backend</th><th>device</th><th>parameters</th>"
            "<th>status</th><th>error</th></tr>" + "".join(rows) + "</table>"
        )
        if len(bad) > UNFINISHED_ROWS:
            parts.append(_unfinished_counts(bad))
    skipped = trials[trials["status"] == "skipped"]
    if not skipped.empty:
        reasons = skipped.groupby(["workload", "error"], dropna=False).size().reset_index(name="trials")
        body = "".join(
            f"<tr><td>{esc(r.workload)}</td><td>{r.trials}</td><td>{esc(r.error)}</td></tr>"
            for r in reasons.itertuples()
        )
        parts.append(
            f"<details><summary>{len(skipped)} skipped trial(s): the workload cannot run them here</summary>"
            f"<table><tr><th>workload</th><th>trials</th><th>reason</th></tr>{body}</table></details>"
        )
    return "".join(parts)


def _unfinished_counts(bad: pd.DataFrame) -> str:
    """All unfinished trials counted per workload, status and first line of the error (beyond the listed ones)."""
    first_line = bad["error"].fillna("").astype(str).str.strip().str.partition("\n")[0]
    counts = (
        bad.assign(first_line=first_line)
        .groupby(["workload", "status", "first_line"], dropna=False, sort=True)
        .size()
        .reset_index(name="trials")
        .sort_values("trials", ascending=False, kind="stable")
    )
    body = "".join(
        f"<tr><td>{esc(r.workload)}</td><td class=fails>{esc(r.status)}</td><td>{r.trials}</td>"
        f"<td>{esc(r.first_line)}</td></tr>"
        for r in counts.itertuples()
    )
    return (
        f"<p class=na>First {UNFINISHED_ROWS} of {len(bad)} unfinished trials listed; all of them, counted:</p>"
        f"<table><tr><th>workload</th><th>status</th><th>trials</th><th>error (first line)</th></tr>{body}</table>"
    )


_ENV_ROWS = (
    ("host", "host"),
    ("device kind", "device_kind"),
    ("device", "device_name"),
    ("Python", "python"),
    ("torch", "torch"),
    ("JAX", "jax"),
    ("jaxlib", "jaxlib"),
    ("Ray", "ray"),
    ("numpy", "numpy"),
    ("pyarrow", "pyarrow"),
    ("CUDA", "cuda"),
    ("cuDNN", "cudnn"),
    ("NVIDIA driver", "driver"),
    ("GPU", "cuda_device"),
    ("threads", "threads"),
    ("platform", "platform"),
    ("git commit", "git_commit"),
)
_GPU_ONLY = {"cuda", "cudnn", "driver", "cuda_device"}


def env_html(df: pd.DataFrame) -> str:
    """One column per backend, device and host; CUDA rows only for columns whose trials ran on a GPU."""
    envs = _envs(df)
    used = envs[envs["device_name"].notna()]
    envs = used if not used.empty else envs
    groups = list(envs.groupby(["backend", "device_kind", "host"], dropna=False))
    head = "".join(f"<th>{esc(b)} · {esc(k)}</th>" for (b, k, _), _ in groups)
    rows = []
    for label, key in _ENV_ROWS:
        cells = []
        for (_, kind, _), g in groups:
            values = g[key].dropna().map(_plain) if key in g else pd.Series(dtype=str)
            shown = key not in _GPU_ONLY or kind == "cuda"
            cells.append(", ".join(sorted(set(values))) if shown else "")
        if any(cells):
            rows.append(f"<tr><th>{esc(label)}</th>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    return f"<table><tr><th></th>{head}</tr>{''.join(rows)}</table>"


def _plain(value: Any) -> str:
    """A value as text, integral floats without their ``.0`` (JSON numbers become floats in a frame)."""
    return f"{value:.0f}" if isinstance(value, float) and value.is_integer() else str(value)


def limits_html(df: pd.DataFrame) -> str:
    """Best matmul FLOP/s and copy bytes/s per backend, device and dtype (device_roofline's rows)."""
    rows = ok_rows(df)
    rows = rows[(rows["workload"] == "device_roofline") & rows["metric"].isin(["flop_per_s", "bytes_per_s"])]
    if rows.empty:
        return "<p class=na>No device_roofline results here: run it to see the device's limits.</p>"
    per_trial = rows.groupby(["backend", "device_name", "p_dtype", "metric", "trial_key"])["value"].median()
    best = per_trial.groupby(["backend", "device_name", "p_dtype", "metric"]).max().unstack("metric")
    body = "".join(
        f"<tr><td>{esc(b)}</td><td>{esc(d)}</td><td>{esc(t)}</td>"
        f"<td>{_si(r.get('flop_per_s'), 'FLOP/s')}</td><td>{_si(r.get('bytes_per_s'), 'B/s')}</td></tr>"
        for (b, d, t), r in best.iterrows()
    )
    return (
        "<h3>Device limits (device_roofline)</h3><table><tr><th>backend</th><th>device</th><th>dtype</th>"
        f"<th>best matmul</th><th>best copy</th></tr>{body}</table>"
    )


def _si(value: Any, unit: str) -> str:
    """``1.23 TFLOP/s``; bytes with binary prefixes (``12.3 GiB/s``)."""
    if value is None or pd.isna(value):
        return ""
    if unit.startswith("B"):
        return axes.format_bytes(float(value)) + unit[1:]
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, "")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


__all__ = ["BAD_STATUSES", "UNFINISHED_ROWS", "env_html", "esc", "limits_html", "run_html", "unfinished_html"]
