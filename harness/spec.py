"""Sweep specs: YAML documents read into validated pydantic models (DESIGN.md, "Sweep spec")."""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml

import backends
import workloads
from harness.errors import UserError
from harness.registry import did_you_mean
from harness.workload import Float, Workload

DEVICES = ("cpu", "cuda", "tpu", "auto")


class _Strict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")


class Resources(_Strict):
    """What one trial asks of a node; ``cpus`` None means 1 with an accelerator, else a whole node."""

    cpus: pydantic.PositiveFloat | None = None
    gpus: pydantic.NonNegativeFloat = 0.0
    tpus: pydantic.NonNegativeInt = 0


class Range(_Strict):
    """A float range for a search, or an integer one with ``int: true``; ``log`` samples log-uniformly."""

    low: Float
    high: Float
    log: bool = False
    int: bool = False

    @pydantic.model_validator(mode="after")
    def _ordered(self) -> "Range":
        if not self.low < self.high or (self.log and self.low <= 0):
            raise ValueError(f"needs low < high (and low > 0 with log); got low={self.low}, high={self.high}")
        return self


class Constraint(_Strict):
    """A bound a trial's reduced metric must meet to count as feasible."""

    metric: str
    max: Float | None = None
    min: Float | None = None


class Search(_Strict):
    """An Optuna search over ``space`` (ranges or lists of choices), optimising ``metric``."""

    metric: str
    direction: Literal["minimize", "maximize"]
    space: dict[str, Range | list[Any]] = pydantic.Field(min_length=1)
    constraints: list[Constraint] = []


class Sweep(_Strict):
    """One sweep: a workload, backends, device, grid, repeats, resources (DESIGN.md)."""

    name: str = pydantic.Field(pattern=r"^[A-Za-z0-9_.-]+$")
    workload: str
    backends: list[str] = pydantic.Field(min_length=1)
    device: Literal["cpu", "cuda", "tpu", "auto"] = "cpu"
    repeats: pydantic.PositiveInt = 1
    base_seed: pydantic.NonNegativeInt = 0
    grid: dict[str, Any]
    exclude: list[dict[str, Any]] = []
    resources: Resources = Resources()
    timeout_s: pydantic.PositiveFloat = 600.0
    isolation: Literal["actor", "process"] = "actor"
    search: Search | None = None


def one_line_error(err: pydantic.ValidationError, prefix: str = "") -> str:
    """The first error of a pydantic ValidationError as ``path: message (got value)``."""
    first = err.errors()[0]
    path = ".".join(str(p) for p in (*([prefix] if prefix else []), *first["loc"]))
    got = first.get("input")
    shown = "" if isinstance(got, dict) or got is None else f" (got {got!r})"
    return f"{path}: {first['msg']}{shown}"


def _check_names(kind: str, path: str, given: list[str], known: list[str]) -> None:
    for name in given:
        if name not in known:
            raise UserError(f"{path}: unknown {kind} '{name}'; allowed: {', '.join(known)}{did_you_mean(name, known)}")


def validate_sweep(doc: Any) -> tuple[Sweep, Workload]:
    """Validate one YAML document into a Sweep and its workload; UserError on the first problem."""
    if not isinstance(doc, dict):
        raise UserError(f"spec: expected a mapping with name, workload, backends, grid; got {type(doc).__name__}")
    for key in ("name", "workload", "grid"):
        if key not in doc:
            raise UserError(f"{key}: missing (a sweep needs name, workload, backends and grid)")
    if not isinstance(doc["workload"], str):
        raise UserError(f"workload: expected a workload name, got {doc['workload']!r}")
    _check_names("workload", "workload", [doc["workload"]], workloads.names())
    workload = workloads.get(doc["workload"])
    if not isinstance(doc.get("grid"), dict) or not doc["grid"]:
        raise UserError("grid: is empty; give at least one parameter, e.g. "
                        f"grid: {{{next(iter(workload.Params.model_fields))}: ...}}")
    try:
        sweep = Sweep.model_validate(doc)
    except pydantic.ValidationError as err:
        raise UserError(one_line_error(err)) from None
    _check_names("backend", "backends", sweep.backends, [b for b in backends.names() if b in workload.backends])
    fields = list(workload.Params.model_fields)
    _check_names("parameter", "grid", list(sweep.grid), fields)
    for i, entry in enumerate(sweep.exclude):
        _check_names("parameter", f"exclude[{i}]", list(entry), fields)
    for key, value in sweep.grid.items():
        if isinstance(value, list) and not value:
            raise UserError(f"grid.{key}: empty list; give one value or a list of values")
    if sweep.search:
        _check_names("parameter", "search.space", list(sweep.search.space), fields)
        metric_names = [m.name for m in workload.metrics]
        _check_names("metric", "search.metric", [sweep.search.metric], metric_names)
        for i, c in enumerate(sweep.search.constraints):
            _check_names("metric", f"search.constraints[{i}].metric", [c.metric], metric_names)
    normalised_rules(workload, sweep)
    for point in grid_points(sweep.grid):
        validate_params(workload, point)
    return sweep, workload


def grid_points(grid: dict[str, Any]) -> list[dict[str, Any]]:
    """The cartesian product of the grid: lists sweep, scalars fix."""
    keys = list(grid)
    axes = [grid[k] if isinstance(grid[k], list) else [grid[k]] for k in keys]
    return [dict(zip(keys, combo)) for combo in itertools.product(*axes)]


def validate_params(workload: Workload, point: dict[str, Any], where: str = "grid") -> dict[str, Any]:
    """Validate a grid point with the workload's Params; return the JSON dump (defaults, nulls filled)."""
    try:
        return workload.Params.model_validate(point).model_dump(mode="json")
    except pydantic.ValidationError as err:
        raise UserError(one_line_error(err, where)) from None


def excluded(params: dict[str, Any], rules: list[dict[str, Any]]) -> bool:
    return any(all(params.get(k) == v for k, v in rule.items()) for rule in rules)


def normalised_rules(workload: Workload, sweep: Sweep) -> list[dict[str, Any]]:
    """Exclude entries with each value coerced by its field's type, as grid values are."""
    rules = []
    for i, rule in enumerate(sweep.exclude):
        norm = {}
        for key, value in rule.items():
            adapter = pydantic.TypeAdapter(workload.Params.model_fields[key].annotation)
            try:
                norm[key] = adapter.dump_python(adapter.validate_python(value), mode="json")
            except pydantic.ValidationError as err:
                raise UserError(one_line_error(err, f"exclude[{i}].{key}")) from None
        rules.append(norm)
    return rules


def load_specs(path: str | Path) -> list[tuple[Sweep, Workload]]:
    """Read every YAML document of ``path`` as a sweep; a file may hold several (``---``)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"spec: file '{path}' not found")
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except yaml.YAMLError as err:
        raise UserError(f"spec: malformed YAML in '{path}': {' '.join(str(err).split())}") from None
    if not docs:
        raise UserError(f"spec: '{path}' holds no sweep")
    sweeps = [validate_sweep(d) for d in docs]
    names = [s.name for s, _ in sweeps]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UserError(f"name: sweep names must be unique within a file; repeated: {', '.join(dupes)}")
    return sweeps
