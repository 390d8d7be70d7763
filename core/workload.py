"""What a workload module declares and returns: metrics, records, checks, the trial context."""

from __future__ import annotations

import dataclasses
import functools
import logging
import typing
from collections.abc import Callable, Collection, Sequence
from fractions import Fraction
from typing import Annotated, Any, Literal, Protocol

import pydantic

from core.checks import Check
from core.figures import Custom, Figure, Setting

Direction = Literal["lower", "higher"]
Reduction = Literal["median", "last", "max", "min", "mean"]


def _parse_float(value: Any) -> Any:
    """Accept YAML strings such as ``1e-4`` (YAML 1.1 reads them as strings) and ``4/3``."""
    if isinstance(value, str):
        text = value.strip()
        try:
            return float(Fraction(text)) if "/" in text else float(text)
        except (ValueError, ZeroDivisionError):
            return value
    return value


Float = Annotated[float, pydantic.BeforeValidator(_parse_float)]
"""A float parameter that also takes ``1e-4`` and ``4/3`` written as YAML strings."""


def _has_float(annotation: Any) -> bool:
    return annotation is float or any(_has_float(a) for a in typing.get_args(annotation))


DEFAULT: Any = object()
"""``OnlyIf(..., fill=DEFAULT)``: where the parameter applies, null means the field's default."""


class OnlyIf:
    """Marks a parameter that applies only where other parameters take given values; elsewhere it is null.

    Written in the field's annotation, ``sleep_s: Annotated[float | None, OnlyIf(mode=["sleep"])]``,
    and enforced once by ``Params``: a parameter that does not apply becomes None whatever was given,
    so equal configurations get equal trial keys and a grid can sweep a parameter alongside one
    that switches it off.

    Args:
        fill: what a null (or absent) value becomes where the parameter applies: None keeps it null,
            ``DEFAULT`` takes the field's default, a callable gets the conditions' values by name
            and returns one, anything else is the value itself.
        **when: parameter name -> the values under which this one applies (every condition must hold),
            compared after validation (``"true"`` counts as True for a bool).
    """

    def __init__(self, fill: Any = None, **when: Collection[Any]) -> None:
        if not when:
            raise TypeError("OnlyIf needs at least one condition, e.g. OnlyIf(solver=['dykstra'])")
        bad = [name for name, values in when.items() if isinstance(values, str) or not isinstance(values, Collection)]
        if bad:
            raise TypeError(f"OnlyIf({bad[0]}=...): the allowed values must be a list, e.g. {bad[0]}=['value']")
        self.when: dict[str, tuple[Any, ...]] = {name: tuple(values) for name, values in when.items()}
        self.fill = fill

    def __repr__(self) -> str:
        return f"OnlyIf({', '.join(f'{k}={list(v)!r}' for k, v in self.when.items())})"


class _Unresolved(Exception):
    """A condition's parameter has a value that does not validate (its own field reports it)."""


def _only_if(field: pydantic.fields.FieldInfo) -> OnlyIf | None:
    return next((m for m in field.metadata if isinstance(m, OnlyIf)), None)


@functools.cache
def _adapter(model: type[pydantic.BaseModel], name: str) -> pydantic.TypeAdapter:
    field = model.model_fields[name]
    annotation: Any = field.annotation
    metadata = [m for m in field.metadata if not isinstance(m, OnlyIf)]
    return pydantic.TypeAdapter(Annotated[(annotation, *metadata)] if metadata else annotation)


class Params(pydantic.BaseModel):
    """Base of every workload's parameters: frozen, unknown keys are errors.

    Every float field (also Optional or constrained) takes ``1e-4`` and ``4/3`` written in YAML, and
    every field marked ``OnlyIf`` is null where it does not apply.
    """

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        for name, field in cls.model_fields.items():
            marker = _only_if(field)
            for other in marker.when if marker else ():
                if other == name or other not in cls.model_fields:
                    allowed = ", ".join(n for n in cls.model_fields if n != name)
                    raise TypeError(f"{cls.__name__}.{name}: OnlyIf names {other!r}; allowed: {allowed}")
        cls._check_acyclic()

    @classmethod
    def _check_acyclic(cls) -> None:
        def visit(name: str, path: tuple[str, ...]) -> None:
            marker = _only_if(cls.model_fields[name])
            for other in marker.when if marker else ():
                if other in path:
                    raise TypeError(f"{cls.__name__}: OnlyIf conditions form a cycle: {' -> '.join((*path, other))}")
                visit(other, (*path, other))

        for name in cls.model_fields:
            visit(name, (name,))

    @pydantic.model_validator(mode="before")
    @classmethod
    def _apply_only_if(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data, resolved = dict(data), {}

        def value(name: str) -> Any:
            """The validated value ``name`` ends with (after its own OnlyIf); _Unresolved if invalid."""
            if name not in resolved:
                field = cls.model_fields[name]
                raw = data.get(name, field.get_default(call_default_factory=True))
                marker = _only_if(field)
                if marker is not None:
                    raw = _apply(marker, field, raw)
                try:
                    resolved[name] = _adapter(cls, name).validate_python(raw)
                except pydantic.ValidationError:
                    raise _Unresolved(name) from None
            return resolved[name]

        def _apply(marker: OnlyIf, field: pydantic.fields.FieldInfo, raw: Any) -> Any:
            conditions = {other: value(other) for other in marker.when}
            if any(conditions[other] not in allowed for other, allowed in marker.when.items()):
                return None
            if raw is not None or marker.fill is None:
                return raw
            if marker.fill is DEFAULT:
                return field.get_default(call_default_factory=True)
            return marker.fill(conditions) if callable(marker.fill) else marker.fill

        for name, field in cls.model_fields.items():
            marker = _only_if(field)
            if marker is None:
                continue
            raw = data.get(name, field.get_default(call_default_factory=True))
            try:
                new = _apply(marker, field, raw)
            except _Unresolved:
                continue  # a condition's own field reports its bad value
            if new is not raw or name in data:
                data[name] = new
        return data

    @pydantic.field_validator("*", mode="before")
    @classmethod
    def _floats_from_yaml(cls, value: Any, info: pydantic.ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        return _parse_float(value) if field is not None and _has_float(field.annotation) else value


@dataclasses.dataclass(frozen=True)
class Metric:
    """A metric a workload records: unit, which direction is better, how samples reduce."""

    name: str
    unit: str
    direction: Direction
    reduce: Reduction
    doc: str = ""


@dataclasses.dataclass(frozen=True)
class Record:
    """One observed value of a trial.

    ``step`` is a training step or epoch, ``sample`` the index of a timing repeat, ``tag`` a
    label inside the trial (a parameter tensor, a layer/head); each is None where it does not apply.
    """

    metric: str
    value: float
    step: int | None = None
    sample: int | None = None
    tag: str | None = None


class Skip(Exception):
    """Raised by ``run`` for a combination the workload cannot run; recorded as ``skipped``."""


@dataclasses.dataclass
class Context:
    """What a trial gets from the harness: seed, device kind, logger, deadline, CPU count."""

    seed: int
    device: str
    num_cpus: int
    deadline: float
    logger: logging.Logger = dataclasses.field(default_factory=lambda: logging.getLogger("deeperbench"))


_BaseParams = Params
"""``Params`` under a second name: inside ``Workload`` the name ``Params`` is the module's own subclass."""


class Workload(Protocol):
    """The shape of a workload module (docs/plugins.md)."""

    name: str
    version: int
    backends: Sequence[str]
    metrics: Sequence[Metric]
    Params: type[_BaseParams]
    smoke: _BaseParams
    run: Callable[..., list[Record]]
    figures: Sequence[Figure | Custom]
    checks: Callable[[Any], list[Check]]
    settings: Sequence[Setting]


REQUIRED = ("name", "version", "backends", "metrics", "Params", "smoke", "run", "figures", "checks")


def validate_module(module: Any) -> Workload:
    """Check that a module has the workload shape; raise naming what is missing."""
    missing = [attr for attr in REQUIRED if not hasattr(module, attr)]
    if missing:
        raise TypeError(f"workload module {module.__name__} lacks {', '.join(missing)}")
    if not isinstance(module.smoke, module.Params):
        raise TypeError(f"workload {module.name}: smoke must be a {module.Params.__name__}")
    if not all(isinstance(f, (Figure, Custom)) for f in module.figures):
        raise TypeError(f"workload {module.name}: figures must be a sequence of Figure or Custom declarations")
    if not all(isinstance(s, Setting) for s in settings(module)):
        raise TypeError(f"workload {module.name}: settings must be a sequence of Setting declarations")
    return module


def settings(workload: Workload) -> Sequence[Setting]:
    """The thesis settings the workload declares (none where it reproduces no figure)."""
    return getattr(workload, "settings", ())


def uses_backend(workload: Workload) -> bool:
    """False where the module declares ``uses_backend = False``: its trials get no backend and import no framework."""
    return getattr(workload, "uses_backend", True)


def metric_map(workload: Workload) -> dict[str, Metric]:
    """The workload's metrics by name."""
    return {m.name: m for m in workload.metrics}
