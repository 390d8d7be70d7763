"""Spec validation: every kind of bad input is one clear UserError naming the field."""
from __future__ import annotations

import textwrap

import pytest

from harness.errors import UserError
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


@pytest.mark.parametrize("text, expected", [
    (GOOD.replace("device_roofline", "device_rooflin"), "unknown workload 'device_rooflin'.*did you mean 'device_roofline'"),
    (GOOD.replace("n: [64, 128]", "nn: [64, 128]"), r"grid: unknown parameter 'nn'.*allowed: op, n, dtype"),
    (GOOD.replace("n: [64, 128]", "n: [64, big]"), r"grid.n: .*integer.*'big'"),
    (GOOD.replace("n: [64, 128]", "n: [64, -3]"), r"grid.n: Input should be greater than 0 \(got -3\)"),
    (GOOD.replace("n: [64, 128]", "dtype: float16"), r"grid.dtype: Input should be 'float32' or 'bfloat16'"),
    (GOOD.replace("  n: [64, 128]\n", "") .replace("grid:", "grid: {}"), "grid: is empty"),
    (GOOD.replace("n: [64, 128]", "n: []"), "grid.n: empty list"),
    (GOOD + "exclude:\n  - {size: 64}\n", r"exclude\[0\]: unknown parameter 'size'"),
    (GOOD.replace("[torch, jax]", "[torch, tensorflow]"), "backends: unknown backend 'tensorflow'; allowed: jax, torch"),
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
])
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
    path = write(tmp_path, """
    name: f
    workload: harness_probe
    backends: [torch]
    grid: {mode: sleep, sleep_s: [1e-4, 4/3, 2]}
    """)
    [(sweep, workload)] = load_specs(path)
    values = sorted(t.params["sleep_s"] for t in expand(sweep, workload, device="cpu"))
    assert values == [1e-4, 4 / 3, 2.0]
    assert all(isinstance(v, float) for v in values)
