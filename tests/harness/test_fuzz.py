"""Property-based fuzzing of the spec loader and ``plan``: generated YAML, valid and mutated.

For every document: either a plan or a UserError, never another exception; a plan's trials all
land under ``--out``, never above it; an error is one line of bounded length. The fast suite runs
a few dozen examples; the slow one (``make test-slow``) at least 500.
"""

from __future__ import annotations

import os
import posixpath
import tempfile

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from core.errors import MAX_MESSAGE_CHARS, UserError
from harness.executors.local import LocalExecutor
from harness.runner import plan
from harness.spec import load_specs
from results.store import Store

MAX_TRIALS = 2_000
"""The fuzzer's trial limit: a generated sweep above it must be refused, not expanded."""

HOSTILE_NAMES = ["..", ".", "../x", "a/b", "/abs", "_logs", ".hidden", "x" * 101, "", "a\nb", "a\x00b", "café"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=10,
)


def axis(good: st.SearchStrategy) -> st.SearchStrategy:
    """A grid entry: one good value, or a list of them (a swept axis)."""
    return st.one_of(good, st.lists(good, min_size=1, max_size=4))


bad_search = st.fixed_dictionaries(
    {
        "metric": st.sampled_from(["trial_s", "nope"]),
        "direction": st.sampled_from(["minimize", "maximize", "up"]),
        "space": st.dictionaries(
            st.sampled_from(["sleep_s", "index", "bogus"]),
            st.one_of(
                st.fixed_dictionaries(
                    {"low": st.floats(-2, 2), "high": st.floats(-2, 2)},
                    optional={"log": st.booleans(), "int": st.booleans()},
                ),
                st.lists(scalars, max_size=3),
            ),
            max_size=2,
        ),
    },
    optional={
        "constraints": st.lists(
            st.fixed_dictionaries(
                {"metric": st.sampled_from(["trial_s", "x"])}, optional={"max": st.floats(), "min": st.floats()}
            ),
            max_size=2,
        )
    },
)
good_search = st.fixed_dictionaries(
    {
        "metric": st.just("trial_s"),
        "direction": st.sampled_from(["minimize", "maximize"]),
        "space": st.fixed_dictionaries(
            {"sleep_s": st.fixed_dictionaries({"low": st.just(0.0), "high": st.floats(0.1, 2)})}
        ),
    },
    optional={
        "constraints": st.lists(
            st.fixed_dictionaries({"metric": st.just("trial_s"), "max": st.floats(0, 1)}), max_size=1
        )
    },
)
good_sweep = st.fixed_dictionaries(
    {
        "name": st.from_regex(r"[a-z][a-z0-9_.-]{0,12}", fullmatch=True),
        "workload": st.just("harness_probe"),
        "backends": st.lists(st.sampled_from(["torch", "jax"]), min_size=1, max_size=2, unique=True),
        "grid": st.fixed_dictionaries(
            {"mode": axis(st.sampled_from(["noop", "sleep", "raise", "skip"]))},
            optional={"index": axis(st.integers(min_value=0, max_value=2**63 - 1)), "sleep_s": axis(st.floats(0, 5))},
        ),
    },
    optional={
        "repeats": st.integers(min_value=1, max_value=3),
        "base_seed": st.integers(min_value=0, max_value=10**6),
        "timeout_s": st.floats(0.5, 10**5),
        "device": st.sampled_from(["cpu", "auto"]),
        "isolation": st.sampled_from(["actor", "process"]),
        "resources": st.fixed_dictionaries({}, optional={"cpus": st.floats(0.5, 2)}),
        "exclude": st.lists(st.fixed_dictionaries({"mode": st.sampled_from(["noop", "raise"])}), max_size=2),
    },
)
hostile = {
    "name": st.one_of(st.sampled_from(HOSTILE_NAMES), st.text(max_size=20), values),
    "workload": st.one_of(st.sampled_from(["nope", "harness-probe", ""]), values),
    "backends": st.one_of(st.lists(st.sampled_from(["torch", "jax", "tf"]), max_size=4), values),
    "grid": st.one_of(st.just({}), values),
    "mode": st.one_of(st.sampled_from(["nap", "exit ", ""]), st.lists(scalars, max_size=3), values),
    "index": st.one_of(
        st.integers(min_value=-(2**70), max_value=2**70), st.lists(st.integers(-(2**70), 2**70), max_size=4), values
    ),
    "sleep_s": st.one_of(st.floats(allow_nan=True, allow_infinity=True), values),
    "bogus": values,
    "repeats": st.one_of(st.integers(min_value=-(2**66), max_value=2**66), st.integers(10**5, 10**7), values),
    "base_seed": st.one_of(st.integers(min_value=-(2**66), max_value=2**66), values),
    "timeout_s": st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-1, 10**13), values),
    "device": st.one_of(st.sampled_from(["gpu", "tpu ", "CUDA"]), values),
    "isolation": values,
    "resources": st.one_of(
        st.fixed_dictionaries(
            {},
            optional={
                "cpus": st.floats(-1, 4),
                "gpus": st.floats(-1, 3),
                "tpus": st.integers(-1, 2),
                "gpu": st.integers(),
            },
        ),
        values,
    ),
    "exclude": st.one_of(
        st.lists(st.dictionaries(st.sampled_from(["mode", "index", "zz"]), scalars, max_size=2), max_size=2), values
    ),
    "search": st.one_of(good_search, bad_search, values),
    "extra": values,
}
GRID_KEYS = ("mode", "index", "sleep_s", "bogus")


@st.composite
def sweeps(draw) -> object:
    """A valid sweep, with none, one or two of its fields replaced by something hostile."""
    doc = draw(good_sweep)
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2]))):
        key = draw(st.sampled_from(sorted(hostile)))
        if key in GRID_KEYS and isinstance(doc.get("grid"), dict):
            doc["grid"][key] = draw(hostile[key])
        else:
            doc[key] = draw(hostile[key])
    return doc


@st.composite
def documents(draw) -> bytes:
    """One to three sweeps as YAML, then perhaps cut, spliced or given an alias, as a careless or hostile hand would."""
    docs = draw(st.lists(st.one_of(sweeps(), sweeps(), sweeps(), values), min_size=1, max_size=3))
    text = yaml.safe_dump_all(docs, allow_unicode=True, sort_keys=False).encode("utf-8")
    mutation = draw(st.sampled_from(["none", "none", "none", "cut", "insert", "alias", "bytes"]))
    at = draw(st.integers(min_value=0, max_value=max(0, len(text))))
    if mutation == "cut":
        text = text[:at]
    elif mutation == "insert":
        text = (
            text[:at]
            + draw(st.sampled_from([b"*a ", b"&a ", b"[", b"}", b"\t", b": ", b"- ", b"---\n", b"!!python/object:x "]))
            + text[at:]
        )
    elif mutation == "alias":
        text = b"x: &a [1, 2]\n" + text.replace(b"grid:", b"y: *a\ngrid:", 1)
    elif mutation == "bytes":
        text = text[:at] + draw(st.binary(min_size=1, max_size=4)) + text[at:]
    return text


def check(text: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        spec = os.path.join(folder, "spec.yaml")
        out = os.path.join(folder, "out")
        with open(spec, "wb") as f:
            f.write(text)
        try:
            load_specs(spec, max_trials=MAX_TRIALS)
            trials = plan(spec, LocalExecutor(), max_trials=MAX_TRIALS)
        except UserError as err:
            message = str(err)
            assert "\n" not in message and 0 < len(message) <= MAX_MESSAGE_CHARS
            return
        assert len(trials) <= MAX_TRIALS
        store = Store(out)
        for trial in trials:
            directory = store._dir(trial.sweep, trial.workload)
            assert posixpath.normpath(directory).startswith(store.root + "/")
            assert "/" not in trial.sweep and trial.sweep not in (".", "..")
        assert not os.path.exists(out)  # planning writes nothing


FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
    database=None,
)


@settings(FUZZ, max_examples=40)
@given(documents())
def test_fuzzed_specs_give_a_plan_or_one_user_error(text):
    check(text)


@pytest.mark.slow
@pytest.mark.timeout(1200)
@settings(FUZZ, max_examples=600)
@given(documents())
def test_fuzzed_specs_give_a_plan_or_one_user_error_600_examples(text):
    check(text)


def test_the_fuzzer_reaches_both_outcomes():
    """The generator must produce plans and errors both, or the property above checks only one side."""
    from hypothesis import find

    def plans(text: bytes) -> bool:
        try:
            with tempfile.TemporaryDirectory() as folder:
                spec = os.path.join(folder, "spec.yaml")
                with open(spec, "wb") as f:
                    f.write(text)
                return bool(plan(spec, LocalExecutor(), max_trials=MAX_TRIALS))
        except UserError:
            return False

    quick = settings(
        max_examples=300, deadline=None, database=None, phases=[Phase.generate], suppress_health_check=list(HealthCheck)
    )  # no shrinking: any example will do
    assert plans(find(documents(), plans, settings=quick))
    assert not plans(find(documents(), lambda text: not plans(text), settings=quick))
