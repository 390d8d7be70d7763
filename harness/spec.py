"""Sweep specs: YAML documents read into validated pydantic models (docs/design.md, "Sweep spec")."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml

import backends
import workloads
from core.errors import UserError, shown
from core.paths import NAME_MAX_CHARS, check_name
from core.registry import did_you_mean
from core.trial import Resources
from core.workload import Float, Workload

DEVICES = (*backends.DEVICE_KINDS, "auto")

MAX_SPEC_BYTES = 1 << 20
"""A spec file is at most 1 MiB: a sweep is a few lines; anything larger is a mistake or an attack."""
MAX_ALIASES = 100
"""YAML aliases (``*name``) per file: enough to share a block, too few to build an alias bomb."""
MAX_VALUES = 100_000
"""Values in one document with every alias expanded (what validating and printing it would touch)."""
MAX_DEPTH = 32
"""Nesting depth of one document."""
MAX_TRIALS = 1_000_000
"""Trials per spec file unless ``--max-trials`` raises it: counted from the grid, never expanded."""
MAX_TIMEOUT_S = 30 * 24 * 3600.0
"""The longest ``timeout_s``, 30 days: finite, and small enough for every wait primitive."""
INT64 = (-(1 << 63), (1 << 63) - 1)
"""The integers the results store (Arrow int64 columns) can hold."""
SEED_MAX = (1 << 32) - 1
"""The largest seed (``base_seed + repeat``): 32 bits, which every framework's seeding takes."""


class _Strict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")


class Range(_Strict):
    """A float range for a search, or an integer one with ``int: true``; ``log`` samples log-uniformly."""

    low: Float
    high: Float
    log: bool = False
    int: bool = False

    @pydantic.model_validator(mode="after")
    def _ordered(self) -> Range:
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
    """One sweep: a workload, backends, device, grid, repeats, resources (docs/design.md)."""

    name: str = pydantic.Field(max_length=NAME_MAX_CHARS)
    workload: str
    backends: list[str] = pydantic.Field(min_length=1)
    device: Literal["cpu", "cuda", "tpu", "auto"] = "cpu"
    repeats: pydantic.PositiveInt = 1
    base_seed: int = pydantic.Field(0, ge=0, le=SEED_MAX)
    grid: dict[str, Any]
    exclude: list[dict[str, Any]] = []
    resources: Resources = Resources()
    timeout_s: float = pydantic.Field(600.0, gt=0, le=MAX_TIMEOUT_S, allow_inf_nan=False)
    isolation: Literal["actor", "process"] = "actor"
    search: Search | None = None

    @pydantic.field_validator("name")
    @classmethod
    def _one_path_component(cls, name: str) -> str:
        try:
            return check_name(name)
        except UserError as err:
            raise ValueError(str(err).removeprefix("name: ")) from None

    @pydantic.model_validator(mode="after")
    def _seeds_fit(self) -> Sweep:
        if self.base_seed + self.repeats - 1 > SEED_MAX:
            raise ValueError(
                f"base_seed + repeats - 1 must be at most {SEED_MAX} (seeds are 32-bit); "
                f"got base_seed={self.base_seed}, repeats={self.repeats}"
            )
        return self


def one_line_error(err: pydantic.ValidationError, prefix: str = "") -> str:
    """The first error of a pydantic ValidationError as ``path: message (got value)``."""
    first = err.errors()[0]
    path = ".".join(str(p) for p in (*([prefix] if prefix else []), *first["loc"]))
    got = first.get("input")
    value = "" if isinstance(got, dict) or got is None else f" (got {shown(got)})"
    return f"{path}: {first['msg']}{value}"


def _check_names(kind: str, path: str, given: list[str], known: list[str]) -> None:
    for name in given:
        if name not in known:
            raise UserError(
                f"{path}: unknown {kind} {shown(name)}; allowed: {', '.join(known)}"
                f"{did_you_mean(name, known) if isinstance(name, str) else ''}"
            )


def validate_sweep(doc: Any, *, max_trials: int = MAX_TRIALS) -> tuple[Sweep, Workload]:
    """Validate one YAML document into a Sweep and its workload; UserError on the first problem.

    The trials are counted from the grid before any is expanded: more than ``max_trials`` fails at
    once, whatever their number.
    """
    if not isinstance(doc, dict):
        raise UserError(f"spec: expected a mapping with name, workload, backends, grid; got {type(doc).__name__}")
    check_document(doc)
    for key in ("name", "workload", "grid"):
        if key not in doc:
            raise UserError(f"{key}: missing (a sweep needs name, workload, backends and grid)")
    check_name(doc["name"])
    if not isinstance(doc["workload"], str):
        raise UserError(f"workload: expected a workload name, got {shown(doc['workload'])}")
    _check_names("workload", "workload", [doc["workload"]], workloads.names())
    workload = workloads.get(doc["workload"])
    if not isinstance(doc.get("grid"), dict) or not doc["grid"]:
        raise UserError(
            "grid: is empty; give at least one parameter, e.g. "
            f"grid: {{{next(iter(workload.Params.model_fields))}: ...}}"
        )
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
    count = count_trials(sweep)
    if count > max_trials:
        raise UserError(
            f"grid: sweep {sweep.name} asks for {count:.3g} trials (grid points x backends x repeats); "
            f"{max_trials:g} are left of the file's limit: shrink the grid or raise it with --max-trials"
        )
    if sweep.search:
        _check_names("parameter", "search.space", list(sweep.search.space), fields)
        metric_names = [m.name for m in workload.metrics]
        _check_names("metric", "search.metric", [sweep.search.metric], metric_names)
        for i, c in enumerate(sweep.search.constraints):
            _check_names("metric", f"search.constraints[{i}].metric", [c.metric], metric_names)
        _check_space(workload, sweep.grid, sweep.search)
    normalised_rules(workload, sweep)
    for point in grid_points(sweep.grid):
        validate_params(workload, point)
    return sweep, workload


def count_trials(sweep: Sweep) -> int:
    """Grid points x backends x repeats, computed from the list lengths without expanding the grid."""
    points = math.prod(len(v) for v in sweep.grid.values() if isinstance(v, list))
    return points * len(sweep.backends) * sweep.repeats


def _check_space(workload: Workload, grid: dict[str, Any], search: Search) -> None:
    """Every end of a search range and every choice must be a valid value of its parameter."""
    fixed = next(iter(grid_points(grid)))
    for name, spec in search.space.items():
        if isinstance(spec, Range):
            values = [int(spec.low), int(spec.high)] if spec.int else [spec.low, spec.high]
        else:
            values = spec
        if not values:
            raise UserError(f"search.space.{name}: empty list of choices")
        for value in values:
            validate_params(workload, fixed | {name: value}, where="search.space")


def check_document(doc: Any) -> int:
    """Refuse a document that would be costly to touch, or whose integers the store cannot hold.

    Counts its values with every alias expanded (memoised per shared object, so an alias bomb is
    measured without being expanded), and refuses recursion, nesting deeper than ``MAX_DEPTH``, more
    than ``MAX_VALUES`` values and integers beyond 64 bits. Returns the number of values.
    """
    memo: dict[int, int] = {}
    active: set[int] = set()

    def measure(value: Any, path: str, depth: int) -> int:
        if depth > MAX_DEPTH:
            raise UserError(f"{path}: nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, int) and not isinstance(value, bool):
            if not INT64[0] <= value <= INT64[1]:
                raise UserError(
                    f"{path}: {shown(value)} does not fit in 64 bits; integers must lie in "
                    f"[-2**63, 2**63 - 1] for the results store"
                )
            return 1
        if not isinstance(value, (list, dict)):
            return 1
        if id(value) in memo:
            return memo[id(value)]
        if id(value) in active:
            raise UserError(f"{path}: refers to itself (a recursive YAML alias)")
        active.add(id(value))
        total = 1
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            label = key if isinstance(key, str) and len(key) <= 60 else shown(key)
            where = f"{path}[{key}]" if isinstance(value, list) else f"{path}.{label}" if path else str(label)
            total += measure(key, where, depth + 1) if isinstance(value, dict) else 0
            total += measure(item, where, depth + 1)
            if total > MAX_VALUES:
                raise UserError(f"spec: more than {MAX_VALUES} values once YAML aliases are expanded (at {where})")
        active.discard(id(value))
        memo[id(value)] = total
        return total

    return measure(doc, "", 0)


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
            adapter = pydantic.TypeAdapter(workload.Params.model_fields[key].annotation or Any)
            try:
                norm[key] = adapter.dump_python(adapter.validate_python(value), mode="json")
            except pydantic.ValidationError as err:
                raise UserError(one_line_error(err, f"exclude[{i}].{key}")) from None
        rules.append(norm)
    return rules


_Base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser when present: 20x faster


class _BoundedLoader(_Base):  # type: ignore[misc,valid-type]
    """PyYAML's safe loader, refusing more than ``MAX_ALIASES`` aliases in one file and duplicate keys."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.aliases = 0

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        if node in self.constructed_objects or node in self.recursive_objects:  # a node met again: an alias
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise UserError(f"spec: more than {MAX_ALIASES} YAML aliases (*name); write the values out")
        return super().construct_object(node, deep)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        """A mapping, refusing a scalar key given twice (PyYAML would keep the last one silently)."""
        seen = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                key = (key_node.tag, key_node.value)
                if key in seen:
                    raise UserError(
                        f"spec: key {shown(key_node.value)} is given twice in one mapping "
                        f"(line {key_node.start_mark.line + 1})"
                    )
                seen.add(key)
        return super().construct_mapping(node, deep)


def read_documents(path: str | Path) -> list[Any]:
    """The non-empty YAML documents of ``path``, read under the size, alias and encoding limits."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"spec: file '{path}' not found")
    size = path.stat().st_size
    if size > MAX_SPEC_BYTES:
        raise UserError(f"spec: '{path}' is {size} bytes; a spec file may hold at most {MAX_SPEC_BYTES}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"spec: '{path}' is not UTF-8 text (byte {err.start}: {err.reason})") from None
    except OSError as err:
        raise UserError(f"spec: cannot read '{path}': {err.strerror or err}") from None
    try:
        docs = [d for d in yaml.load_all(text, Loader=_BoundedLoader) if d is not None]
    except yaml.YAMLError as err:
        raise UserError(f"spec: malformed YAML in '{path}': {' '.join(str(err).split())}") from None
    except RecursionError:
        raise UserError(f"spec: '{path}' is nested too deeply") from None
    if not docs:
        raise UserError(f"spec: '{path}' holds no sweep")
    return docs


def load_specs(path: str | Path, *, max_trials: int = MAX_TRIALS) -> list[tuple[Sweep, Workload]]:
    """Read every YAML document of ``path`` as a sweep; a file may hold several (``---``).

    More than ``max_trials`` trials in all fails before any is expanded.
    """
    sweeps: list[tuple[Sweep, Workload]] = []
    for doc in read_documents(path):
        left = max_trials - sum(count_trials(s) for s, _ in sweeps)
        sweeps.append(validate_sweep(doc, max_trials=left))
    names = [s.name for s, _ in sweeps]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UserError(f"name: sweep names must be unique within a file; repeated: {', '.join(dupes)}")
    return sweeps
