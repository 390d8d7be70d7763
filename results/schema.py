"""The Arrow schema of result rows (docs/design.md, "Results"), parameter columns included."""

from __future__ import annotations

import functools
import json
import types
import typing
from typing import Any, Literal

import pyarrow as pa

from core.workload import Workload

BASE = pa.schema(
    [
        ("run_id", pa.string()),
        ("sweep", pa.string()),
        ("trial_key", pa.string()),
        ("workload", pa.string()),
        ("workload_version", pa.int64()),
        ("backend", pa.string()),
        ("device_kind", pa.string()),
        ("device_name", pa.string()),
        ("params", pa.string()),
        ("repeat", pa.int64()),
        ("seed", pa.int64()),
        ("metric", pa.string()),
        ("value", pa.float64()),
        ("unit", pa.string()),
        ("step", pa.int64()),
        ("sample", pa.int64()),
        ("tag", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("started_at", pa.timestamp("us", tz="UTC")),
        ("duration_s", pa.float64()),
        ("host", pa.string()),
        ("env", pa.string()),
        ("study", pa.string()),
        ("trial_number", pa.int64()),
    ]
)

_SCALARS: dict[type, pa.DataType] = {bool: pa.bool_(), int: pa.int64(), float: pa.float64(), str: pa.string()}


def arrow_type(annotation: Any) -> pa.DataType:
    """The Arrow type of a Params field: its scalar type, Optional stripped; strings otherwise."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return arrow_type(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        kinds = [a for a in typing.get_args(annotation) if a is not type(None)]
        return arrow_type(kinds[0]) if len(kinds) == 1 else pa.string()
    if origin is Literal:
        values = typing.get_args(annotation)
        return _SCALARS.get(type(values[0]), pa.string())
    return _SCALARS.get(annotation, pa.string())


def param_fields(workload: Workload) -> list[pa.Field]:
    """One ``p_<name>`` column per parameter of the workload."""
    return [pa.field(f"p_{name}", arrow_type(f.annotation)) for name, f in workload.Params.model_fields.items()]


def unified_schema(workload_list: list[Workload]) -> pa.Schema:
    """BASE plus the parameter columns of every workload; a column must mean one type everywhere."""
    fields = {f.name: f for f in BASE}
    for workload in workload_list:
        for f in param_fields(workload):
            if f.name in fields and fields[f.name].type != f.type:
                raise TypeError(
                    f"parameter column {f.name} is {fields[f.name].type} elsewhere but "
                    f"{f.type} in workload {workload.name}"
                )
            fields[f.name] = f
    return pa.schema(list(fields.values()))


def param_value(value: Any, typ: pa.DataType) -> Any:
    """A parameter value as stored in its typed column (non-scalars as JSON strings)."""
    if value is None or typ != pa.string() or isinstance(value, str):
        return value
    return json.dumps(value)


def full_schema() -> pa.Schema:
    """BASE plus the parameter columns of every registered workload: the schema every result file is written with.

    One schema in every file is what lets pandas, pyarrow, polars and DuckDB read a results folder
    without being told how to merge files; it is also written to ``<out>/_common_metadata``.
    """
    from core.registry import WORKLOADS  # loaded on first use (plugins included)

    return _full_schema(tuple(WORKLOADS.names()))


@functools.lru_cache(maxsize=4)
def _full_schema(names: tuple[str, ...]) -> pa.Schema:
    from core.registry import WORKLOADS

    return unified_schema([WORKLOADS.get(n) for n in names])
