"""The results store: one Parquet file per trial, written atomically, read with one schema.

Layout under ``<out>``: ``<sweep>/<workload>/<trial_key>.parquet`` (a loose trial file, one per
trial as it finishes) and ``<sweep>/<workload>/compacted-<generation>.parquet`` (what
``deeperbench compact`` merged). Every file is written with ``full_schema()`` (every registered
workload's parameters), which ``<out>/_common_metadata`` also holds. A trial is read from its loose
file if there is one, else from the newest compacted file holding it, so a trial re-run after a
compaction replaces its compacted rows, and a compaction killed at any point leaves every trial
readable exactly once. ``<out>`` is a local folder or any pyarrow URI (``s3://bucket/prefix``); on an
object store a file is one upload, visible whole or not at all (``put``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from core.errors import UserError
from core.paths import OBJECT_STORES, check_remote, filesystem, inside, is_remote
from core.registry import WORKLOADS
from core.trial import Outcome, Trial
from core.workload import Record, metric_map
from results.schema import full_schema, param_value, unified_schema

log = logging.getLogger("deeperbench.store")

_TMP = ".tmp-"
COMPACTED = "compacted-"
"""Name prefix of a compacted file; a trial key (hex) never starts with it."""
COMMON_METADATA = "_common_metadata"
"""``<out>/_common_metadata``: the schema of every file, for readers that take one (``schema=``)."""
LOOSE_WRITE = {"store_schema": False, "write_statistics": False, "use_dictionary": False}
"""One-row files: no per-column statistics, dictionaries or Arrow schema blob (their types are Parquet's own)."""
READ_THREADS = 16
"""Files read at once from an object store (``Store._each``); a local disk reads one at a time."""
QUARANTINE = ".quarantine"
"""Where a run moves result files that cannot be read whole (pyarrow's discovery skips dot folders)."""


def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and root path for a local path or any pyarrow URI (``core.paths.filesystem``)."""
    return filesystem(uri)


def put(fs: pafs.FileSystem, final: str, tmp: str, write: Callable[[pa.NativeFile], None]) -> None:
    """Write ``final`` so that no reader ever sees it in part: to ``tmp`` then renamed, or directly on an
    object store, where an object appears whole when its upload completes (and a rename is a copy).
    """
    direct = fs.type_name in OBJECT_STORES
    with fs.open_output_stream(final if direct else tmp) as out:
        write(out)
    if not direct:
        fs.move(tmp, final)


def trial_table(trial: Trial, outcome: Outcome, run_id: str) -> pa.Table:
    """The rows of one trial: one per record, or one row with a null metric when there are none."""
    workload = WORKLOADS.get(trial.workload)
    units = {name: m.unit for name, m in metric_map(workload).items()}
    schema = full_schema()
    common: dict[str, Any] = {
        "run_id": run_id,
        "sweep": trial.sweep,
        "trial_key": trial.key,
        "workload": trial.workload,
        "workload_version": trial.version,
        "backend": trial.backend,
        "device_kind": trial.device,
        "device_name": outcome.device_name,
        "params": json.dumps(trial.params, sort_keys=True),
        "repeat": trial.repeat,
        "seed": trial.seed,
        "status": outcome.status,
        "error": outcome.error,
        "started_at": outcome.started_at,
        "duration_s": outcome.duration_s,
        "host": outcome.host,
        "env": json.dumps(outcome.env, sort_keys=True, default=str),
        "study": trial.study,
        "trial_number": trial.trial_number,
    }
    common |= {
        f.name: param_value(trial.params.get(f.name[2:]), f.type)
        for f in schema
        if f.name.startswith("p_") and f.name[2:] in trial.params
    }
    records: list[Record | None] = list(outcome.records or []) or [None]
    rows = [
        common
        | (
            {
                "metric": r.metric,
                "value": float(r.value),
                "unit": units[r.metric],
                "step": r.step,
                "sample": r.sample,
                "tag": r.tag,
            }
            if r
            else {}
        )
        for r in records
    ]
    return pa.Table.from_pylist(rows, schema=schema)


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with exactly the columns of ``schema``: missing ones null, each cast to its type (older files)."""
    if set(schema.names) <= set(table.column_names):
        table = table.select(schema.names)
        if table.schema.equals(schema):
            return table
    present = set(table.column_names)
    columns = [table[f.name].cast(f.type) if f.name in present else pa.nulls(table.num_rows, f.type) for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


class Group(NamedTuple):
    """The files of one ``<sweep>/<workload>`` folder: loose trial files, and compacted files newest first."""

    loose: list[str]
    compacted: list[str]


def generation(path: str) -> int:
    """The generation number in a compacted file's name (``compacted-000003.parquet`` -> 3)."""
    return int(os.path.basename(path)[len(COMPACTED) : -len(".parquet")])


def loose_key(path: str) -> str:
    return os.path.basename(path)[: -len(".parquet")]


class Store:
    """Parquet files under ``<root>/<sweep>/<workload>/<trial_key>.parquet`` on any pyarrow filesystem."""

    def __init__(self, uri: str, field: str = "DIR") -> None:
        """Open the store at ``uri``; a remote one is probed first (UserError naming ``field`` if it cannot be used)."""
        if is_remote(uri):
            check_remote(uri, field)
        self.uri = uri
        self.fs, self.root = _filesystem(uri)
        self._common: pa.Schema | None = None  # the schema _common_metadata is known to hold

    def shown(self, path: str) -> str:
        """``path`` of this store as a user names it: a local path, or ``scheme://path`` for a remote store."""
        return f"{self.uri.split('://', 1)[0]}://{path}" if is_remote(self.uri) else path

    def _dir(self, sweep: str, workload: str) -> str:
        return self._inside(f"{self.root}/{sweep}/{workload}")

    def _inside(self, path: str) -> str:
        """``path`` if it lies under the store's root; UserError otherwise (a name that climbs out)."""
        return inside(self.root, path)

    def _visible(self, path: str) -> bool:
        """False for anything under a hidden or underscore folder (quarantine, logs, lock), as pyarrow's discovery."""
        relative = path[len(self.root.rstrip("/")) + 1 :]
        return not any(part.startswith((".", "_")) for part in relative.split("/")[:-1])

    def quarantine(self, path: str, err: Exception) -> str:
        """Move an unreadable file to ``<root>/.quarantine/`` (named in a warning) so that its trial runs again."""
        relative = self._inside(path)[len(self.root.rstrip("/")) + 1 :]
        target = self._inside(f"{self.root}/{QUARANTINE}/{relative}")
        self.fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
        self.fs.move(path, target)
        log.warning(
            "unreadable result file %s (%s) moved to %s; its trial will run again",
            path,
            " ".join(str(err).split())[:200],
            target,
        )
        return target

    def write(self, trial: Trial, outcome: Outcome, run_id: str) -> None:
        """Write the trial's file over any earlier one, never visible in part (``put``)."""
        table = trial_table(trial, outcome, run_id)
        directory = self._dir(trial.sweep, trial.workload)
        if self.fs.type_name not in OBJECT_STORES:  # a key needs no folder: on S3 this would be more requests
            self.fs.create_dir(directory, recursive=True)
        self.write_common_metadata(table.schema)
        final = f"{directory}/{trial.key}.parquet"
        tmp = f"{directory}/{_TMP}{uuid.uuid4().hex}-{trial.key}.part"
        put(self.fs, final, tmp, lambda out: pq.write_table(table, out, **LOOSE_WRITE))

    def write_common_metadata(self, schema: pa.Schema) -> None:
        """Write ``<out>/_common_metadata`` (atomically) unless it already holds ``schema``; once per Store."""
        if self._common == schema:
            return
        path = f"{self.root.rstrip('/')}/{COMMON_METADATA}"
        try:
            with self.fs.open_input_file(path) as f:
                current = pq.read_schema(f)
        except (pa.ArrowException, OSError, ValueError):
            current = None
        if current != schema:
            tmp = f"{self.root.rstrip('/')}/{_TMP}{uuid.uuid4().hex}{COMMON_METADATA}"
            put(self.fs, path, tmp, lambda out: pq.write_metadata(schema, out))
        self._common = schema

    def _files(self, sweep: str | None = None) -> list[str]:
        if self.fs.get_file_info(self.root).type == pafs.FileType.File:
            raise UserError(f"DIR: '{self.uri}' is a file, not a results folder")
        base = self.root if sweep is None else f"{self.root}/{sweep}"
        selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
        return sorted(
            i.path
            for i in self.fs.get_file_info(selector)
            if i.type == pafs.FileType.File
            and i.path.endswith(".parquet")
            and not os.path.basename(i.path).startswith(_TMP)
            and self._visible(i.path)
        )

    def groups(self, sweep: str | None = None) -> dict[str, Group]:
        """``<sweep>/<workload>`` folder -> its loose and compacted files (of ``sweep``, or all)."""
        out: dict[str, Group] = {}
        for path in self._files(sweep):
            directory, name = path.rsplit("/", 1)
            group = out.setdefault(directory, Group([], []))
            (group.compacted if re.fullmatch(rf"{COMPACTED}\d+\.parquet", name) else group.loose).append(path)
        for group in out.values():
            group.compacted.sort(key=generation, reverse=True)
        return out

    def remove_temporary(self, sweep: str | None = None) -> int:
        """Delete the temporary files a killed run (or compaction) left under ``sweep`` (or all); return how many."""
        base = self.root if sweep is None else self._inside(f"{self.root}/{sweep}")
        selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
        stale = [
            i.path
            for i in self.fs.get_file_info(selector)
            if i.type == pafs.FileType.File and os.path.basename(i.path).startswith(_TMP)
        ]
        for path in stale:
            self.fs.delete_file(self._inside(path))
        return len(stale)

    def _unreadable(self, path: str, err: Exception, quarantine: bool) -> None:
        if quarantine:
            self.quarantine(path, err)
        else:
            log.warning(
                "ignoring unreadable result file %s (%s); its trial will run again",
                path,
                " ".join(str(err).split())[:200],
            )

    def statuses(self, sweep: str, *, quarantine: bool = False) -> dict[str, str]:
        """trial_key -> status of every trial of ``sweep`` whose file reads whole; the others are named.

        With ``quarantine`` (a run, holding the folder's lock) they are moved aside, so their trials
        run again; without (``--dry-run``) they are skipped and nothing is written. A compacted file
        is read for its keys and statuses only (fast at 10^5 trials): damage in its other columns is
        named by ``read`` (which then skips the file), not quarantined here.
        """
        out: dict[str, str] = {}
        for group in self.groups(sweep).values():
            seen: set[str] = set()
            for path, t in zip(group.loose, self._each(group.loose, pq.read_table)):
                if isinstance(t, Exception):  # read whole: a damaged page sends the trial to quarantine
                    self._unreadable(path, t, quarantine)
                    continue
                if t.num_rows:
                    out[t["trial_key"][0].as_py()] = t["status"][0].as_py()
                    seen.add(t["trial_key"][0].as_py())
            for path in group.compacted:
                try:
                    with self.fs.open_input_file(path) as f:
                        t = pq.read_table(f, columns=["trial_key", "status"])  # 10^5 trials in well under 1 s
                except (pa.ArrowException, OSError, ValueError) as err:
                    self._unreadable(path, err, quarantine)
                    continue
                pairs = t.group_by(["trial_key", "status"]).aggregate([])
                out |= {
                    k: s for k, s in zip(pairs["trial_key"].to_pylist(), pairs["status"].to_pylist()) if k not in seen
                }
                seen.update(pairs["trial_key"].to_pylist())
        return out

    def _each(self, paths: list[str], read: Callable[[pa.NativeFile], pa.Table]) -> list[pa.Table | Exception]:
        """``read`` of each file, in order, or the error it raised; on an object store, ``READ_THREADS`` at once.

        Each file is one request to a remote store; reading several at once overlaps their network
        waits (as pyarrow's own dataset scans do), while errors stay per file, so one damaged trial
        file is quarantined without failing the others.
        """

        def one(path: str) -> pa.Table | Exception:
            try:
                with self.fs.open_input_file(path) as f:
                    return read(f)
            except (pa.ArrowException, OSError, ValueError) as err:
                return err

        if self.fs.type_name not in OBJECT_STORES or len(paths) < 2:
            return [one(p) for p in paths]
        with ThreadPoolExecutor(min(READ_THREADS, len(paths)), thread_name_prefix="deeperbench-read") as pool:
            return list(pool.map(one, paths))

    def _loose_rows(self, files: list[str], schema: pa.Schema) -> tuple[pa.Table, list[str]]:
        """The rows of ``files`` under ``schema`` and the files they came from (those that read whole).

        One file at a time: for many one-row files this is a few times faster than a dataset scan.
        """
        tables, good = [], []
        for path, t in zip(files, self._each(files, lambda f: conform(pq.ParquetFile(f).read(), schema))):
            if isinstance(t, Exception):
                log.warning("ignoring unreadable result file %s (%s)", path, " ".join(str(t).split())[:200])
                continue
            tables.append(t)
            good.append(path)
        return (pa.concat_tables(tables) if tables else schema.empty_table()), good

    def _compacted_rows(self, files: list[str], seen: set[str], schema: pa.Schema) -> list[pa.Table]:
        """The rows of trials in ``files`` (newest first) not in ``seen`` nor in a newer file; ``seen`` grows."""
        tables = []
        for path in files:
            try:
                part = ds.dataset(path, schema=schema, format="parquet", filesystem=self.fs)
                t = part.to_table(filter=~pc.field("trial_key").isin(sorted(seen)) if seen else None)
                keys = pc.unique(part.to_table(columns=["trial_key"])["trial_key"]).to_pylist()
            except (pa.ArrowException, OSError) as err:
                log.warning("ignoring unreadable result file %s (%s)", path, " ".join(str(err).split())[:200])
                continue
            tables.append(t)
            seen.update(keys)
        return tables

    def rows(self, groups: dict[str, Group], schema: pa.Schema) -> tuple[pa.Table, list[str]]:
        """Each trial of ``groups`` once: from its loose file, else from the newest compacted file holding it.

        Returns:
            The rows, and the loose files read (those that do not read whole are named and left out).
        """
        table, loose = self._loose_rows([p for g in groups.values() for p in g.loose], schema)
        tables = [table] if loose else []
        readable = set(loose)
        for group in groups.values():
            seen = {loose_key(p) for p in group.loose if p in readable}
            tables += self._compacted_rows(group.compacted, seen, schema)
        return (pa.concat_tables(tables) if tables else schema.empty_table()), loose

    def read(self, sweep: str | None = None) -> pa.Table:
        """Every readable row (of ``sweep``, or all), under one schema for all workloads present."""
        groups = self.groups(sweep)
        if not groups:
            return unified_schema([]).empty_table()
        names = {d.rsplit("/", 1)[1] for d in groups}
        schema = unified_schema([WORKLOADS.get(n) for n in sorted(names) if n in WORKLOADS])
        return self.rows(groups, schema)[0]
