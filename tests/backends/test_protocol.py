"""Every registered backend satisfies ``backends.Backend``: each member there, with the Protocol's parameters."""

from __future__ import annotations

import inspect

import pytest

import backends
from backends import Backend, Memory


def _members(protocol: type) -> dict[str, object]:
    """The Protocol's declared attributes and methods (name -> function, or None for a data attribute)."""
    found: dict[str, object] = {name: None for name in getattr(protocol, "__annotations__", {})}
    for name, value in vars(protocol).items():
        if inspect.isfunction(value) and not name.startswith("_"):
            found[name] = value
    return found


def _parameters(fn: object) -> list[tuple[str, object, object]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]  # type: ignore[arg-type]


@pytest.mark.parametrize("name", backends.names())
def test_backend_satisfies_the_protocol_with_its_signatures(name: str) -> None:
    backend = backends.get(name)
    assert isinstance(backend, Backend), f"{name}: missing {[m for m in _members(Backend) if not hasattr(backend, m)]}"
    assert isinstance(backend.memory, Memory)
    for protocol, obj in ((Backend, backend), (Memory, backend.memory)):
        for member, declared in _members(protocol).items():
            assert hasattr(obj, member), f"{name}: {protocol.__name__}.{member} missing"
            if declared is None:
                continue
            got = getattr(obj, member)
            assert callable(got), f"{name}: {protocol.__name__}.{member} is not callable"
            assert _parameters(got) == _parameters(declared)[1:], f"{name}: {member} differs from the Protocol"


def test_protocol_lists_the_members_callers_use() -> None:
    members = _members(Backend)
    for used in ("asarray", "to_numpy", "device", "device_name", "time_once", "memory", "ops", "name"):
        assert used in members, used


def test_an_object_missing_a_method_is_not_a_backend() -> None:
    class Partial:
        name = "partial"

        def devices(self) -> list[str]:
            return ["cpu"]

    assert not isinstance(Partial(), Backend)
