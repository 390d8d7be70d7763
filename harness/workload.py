"""What a workload module declares and returns: metrics, records, checks, the trial context."""

from __future__ import annotations

import dataclasses
import logging
import typing
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Annotated, Any, Literal, Protocol

import pydantic

from harness.checks import Check
from harness.figures import Custom, Figure, Setting

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


class Params(pydantic.BaseModel):
    """Base of every workload's parameters: frozen, unknown keys are errors.

    Every float field (also Optional or constrained) takes ``1e-4`` and ``4/3`` written in YAML.
    """

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

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


class Workload(Protocol):
    """The shape of a workload module (see STYLE.md rule 1)."""

    name: str
    version: int
    backends: Sequence[str]
    metrics: Sequence[Metric]
    Params: type[Params]
    smoke: Params
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
