"""The results store at scale: 10^3, 10^4 and 10^5 synthetic one-row trials, loose and compacted.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/store_scale.py [--sizes 1000 10000 100000]
[--loose-max 10000] [--repeats 3]``. Each trial is a ``harness_probe`` no-op (one ``trial_s`` row;
50 values of ``index`` on torch and jax, repeated up to the size) whose rows come from the store's
own ``trial_table``; a loose folder holds one file per trial written as ``Store.write`` writes it,
and ``deeperbench compact`` then merges it. Sizes above
``--loose-max`` are written compacted only (one generation, the file compaction would write),
since writing 10^5 loose files takes longer than reading them. Times, in seconds: the resume scan
(``Store.statuses``), ``Store.read``, ``report`` (``results.report.build``) and ``compare``
(``results.compare.compare``), each ``--repeats`` times (median [min-max]; modules imported before
any timing); bytes on disk per trial (allocated blocks); then the growth exponent of each median
time between the smallest and the largest size (1 = linear in the number of trials).
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import statistics
import tempfile
import time

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import workloads
from core.trial import Outcome, Trial
from core.workload import Record
from harness.sweep import make_trial
from results.compact import compact, write_generation
from results.schema import full_schema
from results.store import LOOSE_WRITE, Store, trial_table

SWEEP = "scale"
PROBE = workloads.get("harness_probe")
DISTINCT = 10_000
"""Trials built one by one with ``trial_table``; larger sizes repeat them under new keys and repeats."""
CONFIGS = 100
"""Distinct (parameters, backend) points: 50 values of ``index`` on torch and on jax; the rest are repeats."""
STEPS = ("statuses", "read", "report", "compare")


def trial(i: int) -> Trial:
    """Trial ``i`` of a sweep of CONFIGS parameter points x 2 backends, repeated."""
    params = PROBE.Params(index=i // 2 % (CONFIGS // 2)).model_dump(mode="json")
    backend, repeat = ("torch", "jax")[i % 2], i // CONFIGS
    return make_trial(PROBE, backend, params, sweep=SWEEP, repeat=repeat, timeout_s=60.0)


def rows(n: int) -> pa.Table:
    """One row per trial for ``n`` trials, as the store writes them (distinct keys, ``p_index`` and values)."""
    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    tables = []
    for i in range(min(n, DISTINCT)):
        outcome = Outcome(
            "ok",
            [Record("trial_s", 1e-3 * (1 + i % 7), sample=0)],
            now,
            0.01,
            "host",
            None,
            None,
            {"git_sha": "0" * 40},
        )
        tables.append(trial_table(trial(i), outcome, "run"))
    base = pa.concat_tables(tables)
    if n <= DISTINCT:
        return base
    copies = []
    for c in range(math.ceil(n / DISTINCT)):
        t = base.slice(0, min(DISTINCT, n - c * DISTINCT))
        repeat = pc.add(t["repeat"], c * DISTINCT // CONFIGS)
        keys = pa.array([f"{c:04x}{k[4:]}" for k in t["trial_key"].to_pylist()])
        for name in ("repeat", "seed"):
            t = t.set_column(t.schema.get_field_index(name), name, repeat)
        copies.append(t.set_column(t.schema.get_field_index("trial_key"), "trial_key", keys))
    return pa.concat_tables(copies)


def write_loose(out: str, table: pa.Table) -> None:
    """One file per trial, named and written as ``Store.write`` does (here without the temporary rename)."""
    directory = os.path.join(out, SWEEP, PROBE.name)
    os.makedirs(directory, exist_ok=True)
    Store(out).write_common_metadata(full_schema())
    for i, key in enumerate(table["trial_key"].to_pylist()):
        pq.write_table(table.slice(i, 1), os.path.join(directory, f"{key}.parquet"), **LOOSE_WRITE)


def on_disk(out: str) -> int:
    return sum(
        os.stat(os.path.join(d, f)).st_blocks * 512
        for d, _, files in os.walk(out)
        for f in files
        if f.endswith(".parquet") or f == "_common_metadata"
    )


def timed(out: str, n: int, repeats: int) -> dict[str, list[float]]:
    """Each step ``repeats`` times in turn (modules imported first, so no import is timed); seconds."""
    from results.compare import compare
    from results.report import build

    steps = {
        "statuses": lambda: Store(out).statuses(SWEEP),
        "read": lambda: Store(out).read(),
        "report": lambda: build(out, os.path.join(out, "_report.html")),
        "compare": lambda: compare(out, "trial_s"),
    }
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            got = step()
            times[name].append(time.perf_counter() - start)
            if name == "statuses" and len(got) != n:
                raise RuntimeError(f"{name}: {len(got)} trials, expected {n}")
            if name == "read" and got.num_rows != n:
                raise RuntimeError(f"{name}: {got.num_rows} rows, expected {n}")
    return times


def spread(samples: list[float]) -> str:
    """``median [min-max]`` of a step's times."""
    return f"{statistics.median(samples):.2f} [{min(samples):.2f}-{max(samples):.2f}]"


def exponent(sizes: list[int], times: list[float]) -> float:
    return math.log(times[-1] / times[0]) / math.log(sizes[-1] / sizes[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--loose-max", type=int, default=10_000, help="largest size also measured loose")
    parser.add_argument("--repeats", type=int, default=3, help="times each step is timed (median [min-max] shown)")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats: {args.repeats} is not allowed; allowed: an integer >= 1")
    results: dict[str, dict[int, dict[str, float]]] = {"loose": {}, "compacted": {}}
    print(
        f"{'layout':<10} {'trials':>8} {'files':>7} {'B/trial':>8} {'write_s':>8} {'compact_s':>9} "
        + " ".join(f"{s + '_s':>20}" for s in STEPS),
        flush=True,
    )
    for n in args.sizes:
        table = rows(n)
        with tempfile.TemporaryDirectory(prefix="store-scale-") as out:
            start = time.perf_counter()
            layouts = []
            if n <= args.loose_max:
                write_loose(out, table)
                layouts.append(("loose", time.perf_counter() - start, float("nan")))
            else:
                store = Store(out)
                os.makedirs(os.path.join(out, SWEEP, PROBE.name))
                store.write_common_metadata(full_schema())
                write_generation(store, os.path.join(out, SWEEP, PROBE.name), table.sort_by("trial_key"), 1)
                layouts.append(("compacted", time.perf_counter() - start, float("nan")))
            for layout, write_s, compact_s in layouts:  # compacting a loose folder appends a layout
                files = sum(f.endswith(".parquet") for _, _, fs in os.walk(out) for f in fs)
                disk = on_disk(out)
                samples = timed(out, n, args.repeats)
                results[layout][n] = {s: statistics.median(samples[s]) for s in STEPS}
                print(
                    f"{layout:<10} {n:>8} {files:>7} {disk / n:>8.0f} {write_s:>8.1f} {compact_s:>9.1f} "
                    + " ".join(f"{spread(samples[s]):>20}" for s in STEPS),
                    flush=True,
                )
                if layout == "loose":
                    start = time.perf_counter()
                    compact(Store(out))
                    layouts.append(("compacted", float("nan"), time.perf_counter() - start))
    for layout, by_size in results.items():
        sizes = sorted(by_size)
        if len(sizes) > 1:
            print(
                f"growth exponent {layout} {sizes[0]}..{sizes[-1]}: "
                + ", ".join(f"{s} {exponent(sizes, [by_size[n][s] for n in sizes]):.2f}" for s in STEPS)
            )


if __name__ == "__main__":
    main()
