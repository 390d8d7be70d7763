"""The results store: one Parquet file per trial, written atomically, read with one schema."""
from __future__ import annotations

import json
import logging
import os
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

import workloads
from harness.errors import UserError
from harness.paths import inside
from harness.sweep import Trial
from harness.trial import Outcome
from harness.workload import metric_map
from results.schema import BASE, param_fields, param_value, unified_schema

log = logging.getLogger("deeperbench.store")

_TMP = ".tmp-"
QUARANTINE = ".quarantine"
"""Where a run moves result files that cannot be read whole (pyarrow's discovery skips dot folders)."""


def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and root path for a local path or any pyarrow URI (s3://, gs://, ...)."""
    if "://" not in uri:
        uri = os.path.abspath(uri)
    return pafs.FileSystem.from_uri(uri)


def trial_table(trial: Trial, outcome: Outcome, run_id: str) -> pa.Table:
    """The rows of one trial: one per record, or one row with a null metric when there are none."""
    workload = workloads.get(trial.workload)
    units = {name: m.unit for name, m in metric_map(workload).items()}
    pfields = param_fields(workload)
    common: dict[str, Any] = {
        "run_id": run_id, "sweep": trial.sweep, "trial_key": trial.key, "workload": trial.workload,
        "workload_version": trial.version, "backend": trial.backend, "device_kind": trial.device,
        "device_name": outcome.device_name, "params": json.dumps(trial.params, sort_keys=True),
        "repeat": trial.repeat, "seed": trial.seed, "status": outcome.status, "error": outcome.error,
        "started_at": outcome.started_at, "duration_s": outcome.duration_s, "host": outcome.host,
        "env": json.dumps(outcome.env, sort_keys=True, default=str), "study": trial.study,
        "trial_number": trial.trial_number,
    }
    common |= {f.name: param_value(trial.params.get(f.name[2:]), f.type) for f in pfields}
    records = outcome.records or [None]
    rows = [common | ({"metric": r.metric, "value": float(r.value), "unit": units[r.metric], "step": r.step,
                       "sample": r.sample, "tag": r.tag} if r else {}) for r in records]
    schema = pa.schema(list(BASE) + pfields)
    return pa.Table.from_pylist(rows, schema=schema)


class Store:
    """Parquet files under ``<root>/<sweep>/<workload>/<trial_key>.parquet`` on any pyarrow filesystem."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.fs, self.root = _filesystem(uri)

    def _dir(self, sweep: str, workload: str) -> str:
        return self._inside(f"{self.root}/{sweep}/{workload}")

    def _inside(self, path: str) -> str:
        """``path`` if it lies under the store's root; UserError otherwise (a name that climbs out)."""
        return inside(self.root, path)

    def _visible(self, path: str) -> bool:
        """False for anything under a hidden or underscore folder (quarantine, logs, lock), as pyarrow's discovery."""
        relative = path[len(self.root.rstrip("/")) + 1:]
        return not any(part.startswith((".", "_")) for part in relative.split("/")[:-1])

    def quarantine(self, path: str, err: Exception) -> str:
        """Move an unreadable file to ``<root>/.quarantine/`` (named in a warning) so that its trial runs again."""
        relative = self._inside(path)[len(self.root.rstrip("/")) + 1:]
        target = self._inside(f"{self.root}/{QUARANTINE}/{relative}")
        self.fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
        self.fs.move(path, target)
        log.warning("unreadable result file %s (%s) moved to %s; its trial will run again", path,
                    " ".join(str(err).split())[:200], target)
        return target

    def write(self, trial: Trial, outcome: Outcome, run_id: str) -> None:
        """Write the trial's file to a temporary name, then rename it over any earlier file."""
        table = trial_table(trial, outcome, run_id)
        directory = self._dir(trial.sweep, trial.workload)
        self.fs.create_dir(directory, recursive=True)
        final = f"{directory}/{trial.key}.parquet"
        tmp = f"{directory}/{_TMP}{uuid.uuid4().hex}-{trial.key}.parquet"
        with self.fs.open_output_stream(tmp) as out:
            pq.write_table(table, out)
        self.fs.move(tmp, final)

    def _files(self, sweep: str | None = None) -> list[str]:
        if self.fs.get_file_info(self.root).type == pafs.FileType.File:
            raise UserError(f"DIR: '{self.uri}' is a file, not a results folder")
        base = self.root if sweep is None else f"{self.root}/{sweep}"
        selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
        return sorted(i.path for i in self.fs.get_file_info(selector)
                      if i.type == pafs.FileType.File and i.path.endswith(".parquet")
                      and not os.path.basename(i.path).startswith(_TMP) and self._visible(i.path))

    def remove_temporary(self, sweep: str) -> int:
        """Delete the temporary files a killed run left under ``sweep``; return how many."""
        selector = pafs.FileSelector(self._inside(f"{self.root}/{sweep}"), recursive=True, allow_not_found=True)
        stale = [i.path for i in self.fs.get_file_info(selector)
                 if i.type == pafs.FileType.File and os.path.basename(i.path).startswith(_TMP)]
        for path in stale:
            self.fs.delete_file(self._inside(path))
        return len(stale)

    def _readable(self, files: list[str], *, whole: bool = False) -> list[str]:
        """The files whose Parquet footer (``whole``: every page) reads; the others are named in a warning."""
        good = []
        for path in files:
            try:
                with self.fs.open_input_file(path) as f:
                    pq.read_table(f) if whole else pq.read_metadata(f)
                good.append(path)
            except (pa.ArrowException, OSError, ValueError) as err:
                log.warning("ignoring unreadable result file %s (%s)", path, " ".join(str(err).split())[:200])
        return good

    def statuses(self, sweep: str, *, quarantine: bool = False) -> dict[str, str]:
        """trial_key -> status of every trial file of ``sweep`` that reads whole; the others are named.

        With ``quarantine`` (a run, holding the folder's lock) they are moved aside, so their trials
        run again; without (``--dry-run``) they are skipped and nothing is written.
        """
        out: dict[str, str] = {}
        for path in self._files(sweep):
            try:
                with self.fs.open_input_file(path) as f:
                    t = pq.read_table(f)
            except (pa.ArrowException, OSError, ValueError) as err:
                if quarantine:
                    self.quarantine(path, err)
                else:
                    log.warning("ignoring unreadable result file %s (%s)", path, " ".join(str(err).split())[:200])
                continue
            if t.num_rows:
                out[t["trial_key"][0].as_py()] = t["status"][0].as_py()
        return out

    def read(self, sweep: str | None = None) -> pa.Table:
        """Every readable row (of ``sweep``, or all), under one schema for all workloads present."""
        files = self._readable(self._files(sweep))
        if not files:
            return unified_schema([]).empty_table()
        names = {os.path.basename(os.path.dirname(p)) for p in files}
        schema = unified_schema([workloads.get(n) for n in sorted(names) if n in workloads.REGISTRY])
        try:
            return ds.dataset(files, schema=schema, format="parquet", filesystem=self.fs).to_table()
        except (pa.ArrowException, OSError) as err:  # a damaged page: find the file, name it, read the rest
            log.warning("a result file does not read whole (%s); checking each file", " ".join(str(err).split())[:200])
            files = self._readable(files, whole=True)
            return ds.dataset(files, schema=schema, format="parquet", filesystem=self.fs).to_table()
