"""A results folder holding every workload reads whole with pandas, pyarrow, polars and DuckDB as-is (issue 15)."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

import workloads
from core.trial import Outcome, Trial
from core.workload import Record, metric_map
from harness.sweep import make_trial
from results.schema import full_schema
from results.store import COMMON_METADATA, Store

OLD_FOLDER = Path(__file__).parent / "data" / "store_v1"
"""A folder written by the store before issue 15 (one schema per workload, ``report.html`` beside the files)."""


def synthetic(workload_name: str, repeat: int, sweep: str = "all") -> Trial:
    wl = workloads.get(workload_name)
    return make_trial(wl, wl.backends[0], wl.smoke, sweep=sweep, repeat=repeat, timeout_s=60.0)


def result(workload_name: str, status: str = "ok") -> Outcome:
    metric = next(iter(metric_map(workloads.get(workload_name))))
    records = [Record(metric, 1.5, sample=0), Record(metric, 2.5, sample=1)] if status == "ok" else []
    return Outcome(
        status=status,
        records=records,
        started_at=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
        duration_s=0.1,
        host="h",
        device_name="cpu0",
        error=None if status == "ok" else "boom",
        env={"k": "v"},
    )


@pytest.fixture(scope="module")
def every_workload(tmp_path_factory) -> tuple[str, int]:
    """A folder with two trials of every registered workload (one ok, one failed), a report and a log beside them."""
    out = tmp_path_factory.mktemp("every")
    store = Store(str(out))
    for name in workloads.names():
        store.write(synthetic(name, 0), result(name), "r1")
        store.write(synthetic(name, 1), result(name, "failed"), "r1")
    (out / "_report.html").write_text("<html></html>")
    (out / "_logs").mkdir()
    (out / "_logs" / "ray.log").write_text("log")
    return str(out), 3 * len(workloads.names())


def check_whole(df: pd.DataFrame, rows: int) -> None:
    assert len(df) == rows
    assert set(full_schema().names) <= set(df.columns)
    assert df["workload"].nunique() == len(workloads.names())
    assert df["p_n"].notna().any()  # a parameter column of one workload survives beside the others' nulls


def test_every_file_has_the_full_schema_and_common_metadata_names_it(every_workload):
    out, _ = every_workload
    schema = full_schema()
    assert pq.read_schema(os.path.join(out, COMMON_METADATA)) == schema
    files = [f for f in Path(out).rglob("*.parquet")]
    assert len(files) == 2 * len(workloads.names())
    assert all(pq.read_schema(f) == schema for f in files)


def test_pandas_reads_the_folder_as_is(every_workload):
    out, rows = every_workload
    check_whole(pd.read_parquet(out), rows)


def test_pyarrow_dataset_reads_the_folder_as_is_and_with_the_common_schema(every_workload):
    out, rows = every_workload
    check_whole(ds.dataset(out).to_table().to_pandas(), rows)
    schema = pq.read_schema(os.path.join(out, COMMON_METADATA))
    table = ds.dataset(out, schema=schema).to_table()
    assert table.schema == schema
    check_whole(table.to_pandas(), rows)


def test_polars_reads_the_folder_with_a_glob(every_workload):
    pl = pytest.importorskip("polars")
    out, rows = every_workload
    check_whole(pl.scan_parquet(out + "/**/*.parquet").collect().to_pandas(), rows)


def test_duckdb_reads_the_folder_with_a_glob(every_workload):
    duckdb = pytest.importorskip("duckdb")
    out, rows = every_workload
    df = duckdb.sql(f"select * from read_parquet('{out}/**/*.parquet')").df()
    check_whole(df, rows)
    n = duckdb.sql(f"select count(*) from read_parquet('{out}/**/*.parquet') where status = 'failed'").fetchall()[0][0]
    assert n == len(workloads.names())


def test_store_reads_the_same_rows_as_pandas(every_workload):
    out, rows = every_workload
    table = Store(out).read()
    assert table.num_rows == rows
    assert sorted(table["trial_key"].to_pylist()) == sorted(pd.read_parquet(out)["trial_key"])


def test_column_types_are_those_of_the_schema_whatever_the_reader(every_workload):
    out, _ = every_workload
    table = pq.read_table(out)
    schema = full_schema()
    for field in schema:
        assert table.schema.field(field.name).type == field.type, field.name


def test_a_folder_written_before_issue_15_still_reads_through_the_store():
    table = Store(str(OLD_FOLDER)).read()
    assert table.num_rows > 0
    assert set(table["workload"].to_pylist()) == {"harness_probe", "device_roofline"}
    assert table.schema.field("p_n").type == pa.int64()
    statuses = Store(str(OLD_FOLDER)).statuses("old")
    assert len(statuses) == len(set(table["trial_key"].to_pylist()))


def test_the_one_level_glob_skips_quarantined_and_temporary_files(every_workload, tmp_path):
    """``OUT/*/*/*.parquet`` matches no hidden folder or file, so a quarantined or half-written file is not read."""
    pl = pytest.importorskip("polars")
    duckdb = pytest.importorskip("duckdb")
    out, rows = every_workload
    copy = tmp_path / "copy"
    import shutil

    shutil.copytree(out, copy)
    (copy / ".quarantine" / "all" / "harness_probe").mkdir(parents=True)
    (copy / ".quarantine" / "all" / "harness_probe" / "0123.parquet").write_bytes(b"PAR1 cut short")
    (copy / "all" / "harness_probe" / ".tmp-1-0123.part").write_bytes(b"partial")
    glob = f"{copy}/*/*/*.parquet"
    check_whole(pl.scan_parquet(glob).collect().to_pandas(), rows)
    check_whole(duckdb.sql(f"select * from read_parquet('{glob}')").df(), rows)
    check_whole(pd.read_parquet(copy), rows)
