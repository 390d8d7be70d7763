"""Both backends export every operator of ``backends.signatures`` with the same signature."""

from __future__ import annotations

import inspect

import pytest

import backends
from backends.signatures import OPS


def _params(fn) -> list[tuple[str, object, object]]:
    sig = inspect.signature(inspect.unwrap(fn))
    return [(p.name, p.kind, p.default) for p in sig.parameters.values()]


@pytest.mark.parametrize("name", sorted(OPS))
def test_operator_has_one_signature_in_every_backend(name):
    found = {b: getattr(backends.get(b).ops, name, None) for b in backends.names()}
    missing = [b for b, fn in found.items() if fn is None]
    assert not missing, f"{name} missing from {missing}"
    signatures = {b: _params(fn) for b, fn in found.items()}
    assert len({repr(s) for s in signatures.values()}) == 1, signatures
    protocol = [p for p in _params(OPS[name].__call__) if p[0] != "self"]
    assert [p[0] for p in signatures["torch"]] == [p[0] for p in protocol]


def test_ops_modules_export_nothing_beyond_the_signatures():
    for b in backends.names():
        assert set(backends.get(b).ops.__all__) == set(OPS), b
