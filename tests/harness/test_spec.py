"""Spec validation: every kind of bad input is one clear UserError naming the field."""

from __future__ import annotations

import textwrap

import pytest

from core.errors import UserError
from harness.spec import load_specs
from harness.sweep import expand


def write(tmp_path, text: str):
    path = tmp_path / "spec.yaml"
    path.write_text(textwrap.dedent(text))
    return path


GOOD = """
name: s
workload: device_roofline
backends: [torch, jax]
grid:
  n: [64, 128]
"""


def test_good_spec_loads(tmp_path):
    [(sweep, workload)] = load_specs(write(tmp_path, GOOD))
    assert sweep.name == "s" and workload.name == "device_roofline"
    assert sweep.backends == ["torch", "jax"]


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            GOOD.replace("device_roofline", "device_rooflin"),
            "unknown workload 'device_rooflin'.*did you mean 'device_roofline'",
        ),
        (GOOD.replace("n: [64, 128]", "nn: [64, 128]"), r"grid: unknown parameter 'nn'.*allowed: op, n, dtype"),
        (GOOD.replace("n: [64, 128]", "n: [64, big]"), r"grid.n: .*integer.*'big'"),
        (GOOD.replace("n: [64, 128]", "n: [64, -3]"), r"grid.n: Input should be greater than 0 \(got -3\)"),
        (GOOD.replace("n: [64, 128]", "dtype: float16"), r"grid.dtype: Input should be 'float32' or 'bfloat16'"),
        (GOOD.replace("  n: [64, 128]\n", "").replace("grid:", "grid: {}"), "grid: is empty"),
        (GOOD.replace("n: [64, 128]", "n: []"), "grid.n: empty list"),
        (GOOD + "exclude:\n  - {size: 64}\n", r"exclude\[0\]: unknown parameter 'size'"),
        (
            GOOD.replace("[torch, jax]", "[torch, tensorflow]"),
            "backends: unknown backend 'tensorflow'; allowed: jax, torch",
        ),
        (GOOD + "device: gpu\n", r"device: Input should be 'cpu', 'cuda', 'tpu' or 'auto' \(got 'gpu'\)"),
        (GOOD + "repeats: -1\n", r"repeats: Input should be greater than 0 \(got -1\)"),
        (GOOD + "timeout_s: 0\n", "timeout_s: Input should be greater than 0"),
        (GOOD + "isolation: thread\n", "isolation: Input should be 'actor' or 'process'"),
        (GOOD + "resources: {gpu: 1}\n", "resources.gpu: Extra inputs are not permitted"),
        (GOOD + "colour: red\n", "colour: Extra inputs are not permitted"),
        ("name: s\nworkload: [device_roofline\n", "malformed YAML"),
        ("- just\n- a list\n", "expected a mapping"),
        (GOOD.replace("name: s\n", ""), "name: missing"),
        (GOOD + "---\n" + GOOD, "sweep names must be unique"),
    ],
)
def test_bad_spec_is_one_clear_line(tmp_path, text, expected):
    with pytest.raises(UserError, match=expected) as info:
        load_specs(write(tmp_path, text))
    assert "\n" not in str(info.value)


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_specs(tmp_path / "nope.yaml")


def test_bad_value_is_found_at_load_not_at_run(tmp_path):
    """Every grid point is validated when the spec loads, so a run never starts half-way."""
    path = write(tmp_path, GOOD.replace("n: [64, 128]", "n: [64, 128, 100000]"))
    with pytest.raises(UserError, match=r"grid.n: Input should be less than or equal to 65536"):
        [(sweep, workload)] = load_specs(path)
        expand(sweep, workload, device="cpu")


def test_yaml_floats_and_fractions_parse_as_floats(tmp_path):
    path = write(
        tmp_path,
        """
    name: f
    workload: harness_probe
    backends: [torch]
    grid: {mode: sleep, sleep_s: [1e-4, 4/3, 2]}
    """,
    )
    [(sweep, workload)] = load_specs(path)
    values = sorted(t.params["sleep_s"] for t in expand(sweep, workload, device="cpu"))
    assert values == [1e-4, 4 / 3, 2.0]
    assert all(isinstance(v, float) for v in values)


# --- hardening (issue 16) --------------------------------------------------------------------------------

import logging  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402

from core.errors import MAX_MESSAGE_CHARS  # noqa: E402
from core.paths import check_name, check_out  # noqa: E402
from harness.lock import RunLock  # noqa: E402
from harness.spec import check_document  # noqa: E402

PROBE = "name: p\nworkload: harness_probe\nbackends: [torch, jax]\ngrid: {mode: noop, index: [0, 1]}\n"


@pytest.mark.parametrize("name", ["a", "A1", "sweep-1.b_c", "9", "x" * 100])
def test_safe_names_pass(name):
    assert check_name(name) == name


@pytest.mark.parametrize(
    "name", ["", ".", "..", ".x", "_x", "-x", "a/b", "a\\b", "a b", "a\n", "x" * 101, "é", None, 3]
)
def test_unsafe_names_are_refused(name):
    with pytest.raises(UserError, match="name: must be 1 to 100 characters"):
        check_name(name)


def test_a_huge_grid_is_counted_not_expanded_and_refused_in_under_a_second(tmp_path):
    axis = "[" + ", ".join(str(i) for i in range(1000)) + "]"
    path = write(
        tmp_path,
        f"name: g\nworkload: harness_probe\nbackends: [torch]\n"
        f"grid: {{mode: sleep, index: {axis}, sleep_s: {axis}}}\nrepeats: 1000\n",
    )
    start = time.monotonic()
    with pytest.raises(UserError, match=r"asks for 1e\+09 trials"):
        load_specs(path)
    assert time.monotonic() - start < 1.0


def test_max_trials_is_the_bound_for_the_whole_file(tmp_path):
    path = write(tmp_path, PROBE + "---\n" + PROBE.replace("name: p", "name: q"))
    assert len(load_specs(path, max_trials=8)) == 2
    with pytest.raises(UserError, match=r"sweep q asks for 4 trials .*; 3 are left of the file's limit"):
        load_specs(path, max_trials=7)


def test_an_alias_bomb_is_refused_in_under_a_second(tmp_path):
    lines = ["a0: &a0 [0, 0, 0, 0, 0, 0, 0, 0, 0]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    path = write(
        tmp_path,
        "\n".join(lines) + "\nname: b\nworkload: harness_probe\nbackends: [torch]\ngrid: {mode: noop, index: *a8}\n",
    )
    start = time.monotonic()
    with pytest.raises(UserError, match="more than 100000 values once YAML aliases are expanded"):
        load_specs(path)
    assert time.monotonic() - start < 1.0


@pytest.mark.parametrize("value, fits", [(2**63 - 1, True), (2**63, False), (-(2**63), True), (-(2**63) - 1, False)])
def test_integers_must_fit_the_stores_64_bits(value, fits):
    doc = {"grid": {"index": [0, value]}}
    if fits:
        assert check_document(doc) == 7  # the document, two keys, a mapping, a list, two integers
    else:
        with pytest.raises(UserError, match=r"grid.index\[1\]: .* does not fit in 64 bits"):
            check_document(doc)


def test_a_value_shown_in_an_error_is_cut_short(tmp_path):
    path = write(tmp_path, PROBE.replace("mode: noop", "mode: " + "z" * 50_000))
    with pytest.raises(UserError) as info:
        load_specs(path)
    assert len(str(info.value)) <= MAX_MESSAGE_CHARS and "\n" not in str(info.value)


def test_a_store_path_outside_out_is_refused(tmp_path):
    from results.store import Store

    store = Store(str(tmp_path / "out"))
    with pytest.raises(UserError, match="lies outside the results folder"):
        store._dir("..", "harness_probe")
    with pytest.raises(UserError, match="lies outside the results folder"):
        store.remove_temporary("../..")
    assert store._dir("s", "w").endswith("/out/s/w")


@pytest.mark.parametrize(
    "make, out, says",
    [
        (lambda p: (p / "f").write_text("x"), "f", "exists and is not a folder"),
        (lambda p: (p / "f").write_text("x"), "f/sub/deeper", "is a file, not a folder"),
        (lambda p: None, "nosuch://bucket/x", "pyarrow cannot open"),
        (lambda p: None, "o" * 256, "longer than 255 bytes"),
    ],
)
def test_a_bad_out_is_refused_without_writing(tmp_path, make, out, says):
    make(tmp_path)
    before = sorted(os.listdir(tmp_path))
    target = out if "://" in out else str(tmp_path / out)
    with pytest.raises(UserError, match=says):
        check_out(target)
    assert sorted(os.listdir(tmp_path)) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_out_is_refused(tmp_path):
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(UserError, match="read-only or no permission"):
            check_out(str(tmp_path / "out"))
    finally:
        tmp_path.chmod(0o755)


def test_a_held_lock_refuses_a_second_holder_naming_host_and_pid(tmp_path):
    out = str(tmp_path / "out")
    with RunLock(out), pytest.raises(UserError, match=rf"is in use by another run \(pid {os.getpid()} on host "):
        RunLock(out).acquire()
    assert not os.path.exists(os.path.join(out, ".lock"))
    with RunLock(out):  # released: free again
        pass


def test_a_stale_lock_is_taken_over_with_a_warning(tmp_path, caplog):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".lock").write_text('{"host": "gone", "pid": 999999, "since": "2020-01-01T00:00:00+00:00"}')
    with caplog.at_level(logging.WARNING, logger="deeperbench.lock"), RunLock(str(out)):
        assert str(os.getpid()) in (out / ".lock").read_text()
    assert "taking over the lock of a run that is no longer running (pid 999999 on host gone" in caplog.text
