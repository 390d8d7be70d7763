"""Compaction: merge the loose trial files of each ``<sweep>/<workload>`` folder into one file (issue 15).

Per folder: read every trial once (its loose file, else the newest compacted file holding it),
write them to a temporary file, rename it to the next generation ``compacted-<n>.parquet`` (on an
object store: upload it under that name, which shows it whole or not at all), then delete the
loose files it read and the older compacted files. Whenever it is killed, every trial still reads
exactly once: before the rename (the upload's completion) nothing visible changed (a temporary
file is ignored and removed later); after it, a loose file and the new generation hold the same
rows and the store prefers the loose file, and an older generation is overridden by the newer.
Running it again finishes the job; on a compacted folder with no new trial it does nothing. The
caller holds the folder's run lock, so no trial is written meanwhile.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid

import pyarrow as pa
import pyarrow.parquet as pq

from core.registry import WORKLOADS
from results.schema import full_schema
from results.store import _TMP, COMPACTED, Group, Store, generation, put

log = logging.getLogger("deeperbench.compact")

ROW_GROUP_ROWS = 128 * 1024
"""Rows per row group of a compacted file: a few MB, so a reader can skip what a filter excludes."""


@dataclasses.dataclass(frozen=True)
class Merged:
    """What compaction did to one ``<sweep>/<workload>`` folder."""

    folder: str
    path: str
    trials: int
    rows: int
    files_merged: int


def write_generation(store: Store, directory: str, table: pa.Table, number: int) -> str:
    """Write ``table`` as ``<directory>/compacted-<number>.parquet``, never visible in part (``put``)."""
    final = f"{directory}/{COMPACTED}{number:06d}.parquet"
    tmp = f"{directory}/{_TMP}{uuid.uuid4().hex}-{COMPACTED}{number:06d}.part"
    put(store.fs, final, tmp, lambda out: pq.write_table(table, out, row_group_size=ROW_GROUP_ROWS, store_schema=False))
    return final


def compact_group(store: Store, directory: str, group: Group) -> Merged | None:
    """Merge one folder's files into its next generation; None when there is nothing to merge."""
    if not group.loose and len(group.compacted) <= 1:
        return None
    name = directory.rsplit("/", 1)[1]
    if name not in WORKLOADS:
        log.warning("left %s as it is: workload '%s' is not registered here", directory, name)
        return None
    table, loose = store.rows({directory: group}, full_schema())  # unreadable files stay: a run quarantines them
    if not loose and len(group.compacted) <= 1:
        return None
    if not table.num_rows:
        return None
    table = table.sort_by([("trial_key", "ascending")])
    number = max((generation(p) for p in group.compacted), default=0) + 1
    final = write_generation(store, directory, table, number)
    for path in loose + group.compacted:  # the new generation holds every row these did
        store.fs.delete_file(store._inside(path))
    trials = len(set(table["trial_key"].to_pylist()))
    return Merged(
        directory[len(store.root.rstrip("/")) + 1 :],
        store.shown(final),
        trials,
        table.num_rows,
        len(loose) + len(group.compacted),
    )


def compact(store: Store) -> list[Merged]:
    """Compact every ``<sweep>/<workload>`` folder of ``store``; removes temporary files a killed run left."""
    store.remove_temporary()
    store.write_common_metadata(full_schema())
    done = [compact_group(store, directory, group) for directory, group in sorted(store.groups().items())]
    return [m for m in done if m is not None]
