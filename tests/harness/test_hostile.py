"""Malformed specs and arguments, as an adversarial user writes them: one line, exit 2, nothing written.

Each case runs the real CLI in this process (``typer.testing.CliRunner``) in an empty working
folder, and asserts: exit status 2, exactly one line on stderr naming the problem, no traceback,
and the folder tree (the spec, ``--out`` and anything else under it) unchanged. A few cases run as
a separate process too, with a time limit, for what only a process shows (memory, stray output).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app

ROOT = Path(__file__).resolve().parents[2]
GOOD = "name: h\nworkload: harness_probe\nbackends: [torch]\ngrid: {mode: noop, index: [0, 1]}\n"
SEARCH = (
    "name: s\nworkload: harness_probe\nbackends: [torch]\ngrid: {mode: sleep}\n"
    "search: {metric: trial_s, direction: minimize, space: {sleep_s: {low: 0.0, high: 0.01}}}\n"
)
RUN = ["run", "{spec}", "--out", "{tmp}/out", "--executor", "local"]


def with_grid(grid: str, rest: str = "") -> str:
    return f"name: h\nworkload: harness_probe\nbackends: [torch]\ngrid: {grid}\n{rest}"


def alias_bomb(levels: int = 9) -> str:
    """The billion-laughs document: a few hundred bytes that expand to 9**9 values."""
    lines = ["a0: &a0 [0, 0, 0, 0, 0, 0, 0, 0, 0]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n" + with_grid(f"{{mode: noop, index: *a{levels - 1}}}")


# (id, spec file content (str, bytes or None for no file), CLI arguments, what the error line says)
SPECS = [
    # item 1: names become one safe path component
    ("name-dotdot", GOOD.replace("name: h", "name: '..'"), RUN, "name: must be 1 to 100 characters"),
    ("name-dot", GOOD.replace("name: h", "name: '.'"), RUN, "name: must be"),
    ("name-hidden", GOOD.replace("name: h", "name: .hidden"), RUN, "name: must be"),
    ("name-underscore", GOOD.replace("name: h", "name: _logs"), RUN, "name: must be"),
    ("name-slash", GOOD.replace("name: h", "name: a/b"), RUN, "name: must be"),
    ("name-climbs", GOOD.replace("name: h", "name: ../../up"), RUN, "name: must be"),
    ("name-absolute", GOOD.replace("name: h", "name: /etc"), RUN, "name: must be"),
    ("name-too-long", GOOD.replace("name: h", "name: " + "x" * 101), RUN, "name: must be 1 to 100"),
    ("name-empty", GOOD.replace("name: h", "name: ''"), RUN, "name: must be"),
    ("name-int", GOOD.replace("name: h", "name: 123"), RUN, "got 123"),
    ("name-null", GOOD.replace("name: h", "name: null"), RUN, "got None"),
    ("name-list", GOOD.replace("name: h", "name: [a]"), RUN, "name: must be"),
    ("name-space", GOOD.replace("name: h", "name: a b"), RUN, "name: must be"),
    ("name-newline", GOOD.replace("name: h", 'name: "a\\n"'), RUN, "name: must be"),
    ("name-nul", GOOD.replace("name: h", 'name: "a\\0b"'), RUN, "name: must be"),
    ("name-unicode", GOOD.replace("name: h", "name: café"), RUN, "name: must be"),
    ("name-binary", GOOD.replace("name: h", "name: !!binary aGVsbG8="), RUN, "name: must be"),
    ("name-missing", GOOD.replace("name: h\n", ""), RUN, "name: missing"),
    # the workload and its grid
    ("workload-unknown", GOOD.replace("harness_probe", "harness_prob"), RUN, "did you mean 'harness_probe'"),
    (
        "workload-list",
        GOOD.replace("workload: harness_probe", "workload: [harness_probe]"),
        RUN,
        "workload: expected a workload name",
    ),
    ("workload-missing", GOOD.replace("workload: harness_probe\n", ""), RUN, "workload: missing"),
    ("grid-missing", "name: h\nworkload: harness_probe\nbackends: [torch]\n", RUN, "grid: missing"),
    ("grid-empty", with_grid("{}"), RUN, "grid: is empty"),
    ("grid-list", with_grid("[mode, noop]"), RUN, "grid: is empty"),
    ("grid-unknown-param", with_grid("{mood: noop}"), RUN, "grid: unknown parameter 'mood'"),
    ("grid-int-key", with_grid("{1: noop}"), RUN, "grid.1.[key]: Input should be a valid string"),
    ("grid-bad-literal", with_grid("{mode: nap}"), RUN, "grid.mode: Input should be 'noop'"),
    ("grid-negative", with_grid("{index: -1}"), RUN, "grid.index: Input should be greater than or equal to 0"),
    ("grid-string-int", with_grid("{index: one}"), RUN, "grid.index: Input should be a valid integer"),
    ("grid-float-int", with_grid("{index: 1.5}"), RUN, "grid.index: Input should be a valid integer"),
    ("grid-empty-list", with_grid("{index: []}"), RUN, "grid.index: empty list"),
    ("grid-nested-map", with_grid("{mode: {a: 1}}"), RUN, "grid.mode"),
    ("grid-nested-list", with_grid("{index: [[0, 1]]}"), RUN, "grid.index: Input should be a valid integer"),
    ("grid-sleep-negative", with_grid("{mode: sleep, sleep_s: -1}"), RUN, "grid.sleep_s"),
    ("grid-sleep-text", with_grid("{mode: sleep, sleep_s: soon}"), RUN, "grid.sleep_s"),
    # item 4: integers the store cannot hold
    (
        "int-beyond-64-bits",
        with_grid("{index: [0, 1, 100000000000000000000000, 2]}"),
        RUN,
        "grid.index[2]: 100000000000000000000000 does not fit in 64 bits",
    ),
    ("int-below-64-bits", with_grid("{index: -100000000000000000000}"), RUN, "does not fit in 64 bits"),
    ("int-2-63", with_grid("{index: 9223372036854775808}"), RUN, "does not fit in 64 bits"),
    ("int-hex-huge", with_grid("{index: 0x1ffffffffffffffff}"), RUN, "does not fit in 64 bits"),
    ("repeats-huge-int", GOOD + "repeats: 100000000000000000000000000000\n", RUN, "repeats: "),
    ("exclude-huge-int", GOOD + "exclude: [{index: 100000000000000000000}]\n", RUN, "exclude[0].index"),
    # backends, device, repeats, seeds, timeouts, isolation, resources
    ("backends-empty", GOOD.replace("[torch]", "[]"), RUN, "backends: List should have at least 1 item"),
    ("backends-unknown", GOOD.replace("[torch]", "[tensorflow]"), RUN, "backends: unknown backend 'tensorflow'"),
    ("backends-string", GOOD.replace("[torch]", "torch"), RUN, "backends: Input should be a valid list"),
    ("backends-missing", GOOD.replace("backends: [torch]\n", ""), RUN, "backends: Field required"),
    ("device-gpu", GOOD + "device: gpu\n", RUN, "device: Input should be 'cpu', 'cuda', 'tpu' or 'auto'"),
    ("repeats-zero", GOOD + "repeats: 0\n", RUN, "repeats: Input should be greater than 0"),
    ("repeats-negative", GOOD + "repeats: -1\n", RUN, "repeats: Input should be greater than 0"),
    ("repeats-text", GOOD + "repeats: many\n", RUN, "repeats: Input should be a valid integer"),
    ("base-seed-negative", GOOD + "base_seed: -1\n", RUN, "base_seed: Input should be greater than or equal to 0"),
    ("base-seed-33-bits", GOOD + "base_seed: 4294967296\n", RUN, "base_seed: Input should be less than or equal"),
    ("seeds-overflow", GOOD + "base_seed: 4294967295\nrepeats: 2\n", RUN, "base_seed + repeats - 1"),
    ("timeout-zero", GOOD + "timeout_s: 0\n", RUN, "timeout_s: Input should be greater than 0"),
    ("timeout-negative", GOOD + "timeout_s: -5\n", RUN, "timeout_s: Input should be greater than 0"),
    ("timeout-inf", GOOD + "timeout_s: .inf\n", RUN, "timeout_s: Input should be a finite number"),
    ("timeout-nan", GOOD + "timeout_s: .nan\n", RUN, "timeout_s: Input should be a finite number"),
    ("timeout-1e12", GOOD + "timeout_s: 1.0e+12\n", RUN, "timeout_s: Input should be less than or equal to"),
    ("timeout-text", GOOD + "timeout_s: soon\n", RUN, "timeout_s: Input should be a valid number"),
    ("isolation-thread", GOOD + "isolation: thread\n", RUN, "isolation: Input should be 'actor' or 'process'"),
    ("resources-typo", GOOD + "resources: {gpu: 1}\n", RUN, "resources.gpu: Extra inputs are not permitted"),
    ("resources-zero-cpus", GOOD + "resources: {cpus: 0}\n", RUN, "resources.cpus: Input should be greater than 0"),
    ("resources-negative-gpus", GOOD + "resources: {gpus: -1}\n", RUN, "resources.gpus"),
    ("resources-list", GOOD + "resources: [1]\n", RUN, "resources: Input should be a valid dictionary"),
    ("resources-tpu-local", GOOD + "resources: {tpus: 1}\n", RUN, "resources: the local executor"),
    ("resources-2-gpus-local", GOOD + "resources: {gpus: 2}\n", RUN, "resources: the local executor"),
    ("exclude-unknown", GOOD + "exclude: [{size: 1}]\n", RUN, "exclude[0]: unknown parameter 'size'"),
    ("exclude-not-list", GOOD + "exclude: {index: 1}\n", RUN, "exclude: Input should be a valid list"),
    ("exclude-bad-type", GOOD + "exclude: [{index: x}]\n", RUN, "exclude[0].index"),
    ("extra-key", GOOD + "colour: red\n", RUN, "colour: Extra inputs are not permitted"),
    # search sections (validated by run too)
    (
        "search-metric-unknown",
        SEARCH.replace("metric: trial_s", "metric: speed"),
        RUN,
        "search.metric: unknown metric 'speed'",
    ),
    ("search-direction", SEARCH.replace("minimize", "sideways"), RUN, "search.direction"),
    ("search-space-empty", SEARCH.replace("{sleep_s: {low: 0.0, high: 0.01}}", "{}"), RUN, "search.space"),
    ("search-space-unknown", SEARCH.replace("sleep_s: {", "nap_s: {"), RUN, "search.space: unknown parameter"),
    ("search-range-reversed", SEARCH.replace("low: 0.0, high: 0.01", "low: 1.0, high: 0.5"), RUN, "needs low < high"),
    ("search-log-zero", SEARCH.replace("high: 0.01}", "high: 0.01, log: true}"), RUN, "needs low < high"),
    (
        "search-constraint-metric",
        SEARCH.replace("}}}\n", "}}, constraints: [{metric: nope, max: 1}]}\n"),
        RUN,
        "search.constraints[0].metric: unknown metric 'nope'",
    ),
    (
        "search-outside-bounds",
        SEARCH.replace("low: 0.0", "low: -1.0"),
        RUN,
        "search.space.sleep_s: Input should be greater than or equal to 0",
    ),
    (
        "search-choice-outside",
        SEARCH.replace("{sleep_s: {low: 0.0, high: 0.01}}", "{index: [0, -2]}"),
        RUN,
        "search.space.index: Input should be greater than or equal to 0",
    ),
    # item 5: huge and hostile specs
    (
        "grid-10-to-7-points",
        with_grid(
            "{index: [" + ", ".join(map(str, range(1000))) + "], "
            "sleep_s: [" + ", ".join(map(str, range(10000))) + "], mode: sleep}"
        ),
        RUN,
        "asks for 1e+07 trials",
    ),
    ("repeats-10-to-7", GOOD + "repeats: 10000000\n", RUN, "asks for 2e+07 trials"),
    (
        "two-sweeps-over-limit",
        GOOD + "repeats: 400000\n---\n" + GOOD.replace("name: h", "name: g") + "repeats: 200000\n",
        RUN,
        "asks for 4e+05 trials",
    ),
    ("alias-bomb", alias_bomb(), RUN, "spec: more than 100000 values once YAML aliases are expanded"),
    ("alias-recursive", with_grid("&g {mode: noop, index: [*g]}"), RUN, "refers to itself"),
    (
        "alias-many",
        "x: &x 1\n" + with_grid("{mode: noop, index: [" + ", ".join(["*x"] * 101) + "]}"),
        RUN,
        "more than 100 YAML aliases",
    ),
    ("nesting-40", with_grid("{mode: noop, index: " + "[" * 40 + "0" + "]" * 40 + "}"), RUN, "nested deeper than 32"),
    ("nesting-10000", with_grid("{index: " + "[" * 10000 + "]" * 10000 + "}"), RUN, "spec: "),
    ("spec-over-1-MiB", GOOD + "#" * (1 << 20) + "\n", RUN, "a spec file may hold at most 1048576"),
    ("long-value-cut", with_grid("{mode: " + "z" * 100000 + "}"), RUN, "grid.mode: Input should be"),
    # reading the file
    ("not-utf8", b"name: h\xff\xfe\nworkload: harness_probe\n", RUN, "is not UTF-8 text"),
    ("utf16", GOOD.encode("utf-16"), RUN, "is not UTF-8 text"),
    ("empty-file", "", RUN, "holds no sweep"),
    ("only-comments", "# nothing\n", RUN, "holds no sweep"),
    ("only-separator", "---\n", RUN, "holds no sweep"),
    ("malformed-yaml", "name: h\nworkload: [harness_probe\n", RUN, "malformed YAML"),
    ("tab-indent", "name: h\ngrid:\n\tmode: noop\n", RUN, "malformed YAML"),
    ("python-tag", GOOD.replace("name: h", "name: !!python/object:os.system [ls]"), RUN, "malformed YAML"),
    ("unhashable-key", GOOD + "? [a, b]\n: 1\n", RUN, "malformed YAML"),
    ("duplicate-key", GOOD + "name: again\n", RUN, "spec: key 'name' is given twice in one mapping (line 5)"),
    ("top-level-list", "- a\n- b\n", RUN, "expected a mapping"),
    ("top-level-scalar", "hello\n", RUN, "expected a mapping"),
    ("duplicate-names", GOOD + "---\n" + GOOD, RUN, "sweep names must be unique"),
    ("second-doc-bad", GOOD + "---\n" + GOOD.replace("name: h", "name: g").replace("noop", "nap"), RUN, "grid.mode"),
    ("missing-file", None, RUN, "not found"),
    ("spec-is-folder", None, ["run", "{tmp}", "--out", "{tmp}/out", "--executor", "local"], "not found"),
    # arguments (item 6: a bad --out fails before the first trial)
    (
        "executor-unknown",
        GOOD,
        ["run", "{spec}", "--out", "{tmp}/out", "--executor", "dask"],
        "unknown executor 'dask'",
    ),
    ("device-flag", GOOD, RUN + ["--device", "gpu"], "--device: unknown device 'gpu'"),
    ("backend-flag", GOOD, RUN + ["--backend", "tensorflow"], "--backend: 'tensorflow' is not a backend"),
    ("out-is-file", GOOD, ["run", "{spec}", "--out", "{spec}", "--executor", "local"], "exists and is not a folder"),
    (
        "out-under-file",
        GOOD,
        ["run", "{spec}", "--out", "{spec}/sub", "--executor", "local"],
        "is a file, not a folder",
    ),
    (
        "out-unknown-scheme",
        GOOD,
        ["run", "{spec}", "--out", "nosuch://x", "--executor", "local"],
        "--out: pyarrow cannot open 'nosuch://x'",
    ),
    (
        "out-name-256",
        GOOD,
        ["run", "{spec}", "--out", "{tmp}/" + "o" * 256, "--executor", "local"],
        "is longer than 255 bytes",
    ),
    (
        "out-path-4097",
        GOOD,
        ["run", "{spec}", "--out", "{tmp}/" + "/".join(["p" * 200] * 21), "--executor", "local"],
        "path longer than 4096 bytes",
    ),
    ("out-empty", GOOD, ["run", "{spec}", "--out", "", "--executor", "local"], "--out: empty"),
    ("address-with-local", GOOD, RUN + ["--address", "127.0.0.1:6379"], "the local executor runs on this host only"),
    (
        "address-malformed",
        GOOD,
        ["run", "{spec}", "--out", "{tmp}/out", "--address", "nohost"],
        "--address: expected HOST:PORT",
    ),
    (
        "address-port-range",
        GOOD,
        ["run", "{spec}", "--out", "{tmp}/out", "--address", "127.0.0.1:99999"],
        "--address: expected HOST:PORT",
    ),
    ("max-trials-exceeded", GOOD, RUN + ["--max-trials", "1"], "asks for 2 trials"),
    ("max-trials-zero", GOOD, RUN + ["--max-trials", "0"], "--max-trials"),
    ("max-trials-text", GOOD, RUN + ["--max-trials", "lots"], "--max-trials"),
    ("unknown-option", GOOD, RUN + ["--nosuch"], "No such option: --nosuch"),
    ("missing-spec-argument", None, ["run"], "Missing argument"),
    ("unknown-command", None, ["nosuchcmd"], "No such command 'nosuchcmd'"),
    # other commands (item 7)
    ("report-on-file", GOOD, ["report", "{spec}"], "is a file, not a results folder"),
    ("report-missing-folder", None, ["report", "{tmp}/none"], "no results under"),
    ("report-empty-folder", None, ["report", "{tmp}"], "no results under"),
    ("compare-by-unknown", None, ["compare", "{results}", "--metric", "trial_s", "--by", "nosuchcol"], "--by"),
    ("compare-metric-unknown", None, ["compare", "{results}", "--metric", "nosuch"], "nosuch"),
    ("compare-on-file", GOOD, ["compare", "{spec}", "--metric", "trial_s"], "is a file, not a results folder"),
    ("compare-missing", None, ["compare", "{tmp}/none", "--metric", "trial_s"], "no results under"),
    (
        "search-storage-garbage",
        SEARCH,
        ["search", "{spec}", "--trials", "1", "--out", "{tmp}/out", "--storage", "garbage://x", "--executor", "local"],
        "--storage",
    ),
    (
        "search-trials-zero",
        SEARCH,
        ["search", "{spec}", "--trials", "0", "--out", "{tmp}/out", "--executor", "local"],
        "--trials",
    ),
    (
        "search-space-outside",
        SEARCH.replace("high: 0.01", "high: -0.5").replace("low: 0.0", "low: -1.0"),
        ["search", "{spec}", "--trials", "1", "--out", "{tmp}/out", "--executor", "local"],
        "search.space.sleep_s",
    ),
    (
        "search-no-section",
        GOOD,
        ["search", "{spec}", "--trials", "1", "--out", "{tmp}/out", "--executor", "local"],
        "exactly one sweep with a search section",
    ),
    (
        "submit-not-http",
        None,
        ["submit", "{root}/sweeps/harness_probe.yaml", "--address", "127.0.0.1:6379"],
        "needs the dashboard's URL",
    ),
    (
        "submit-nothing-listens",
        None,
        ["submit", "{root}/sweeps/harness_probe.yaml", "--address", "http://127.0.0.1:9"],
        "no Ray dashboard answers at 'http://127.0.0.1:9'",
    ),
    (
        "submit-outside-project",
        GOOD,
        ["submit", "{spec}", "--address", "http://127.0.0.1:9"],
        "must lie inside the project",
    ),
    (
        "submit-bad-spec",
        GOOD.replace("noop", "nap"),
        ["submit", "{spec}", "--address", "http://127.0.0.1:9"],
        "grid.mode",
    ),
    ("status-not-http", None, ["status", "job", "--address", "127.0.0.1:6379"], "needs the dashboard's URL"),
    ("logs-not-http", None, ["logs", "job", "--address", "ftp://x"], "needs the dashboard's URL"),
]


def tree(root: Path) -> dict[str, tuple]:
    """Every path under ``root`` with its kind, size and modification time: what 'nothing written' compares."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            out[str(path.relative_to(root))] = (path.is_dir(), st.st_size, st.st_mtime_ns)
    return out


def stored_results(folder: Path) -> None:
    """One real ok trial of harness_probe in a results folder, for compare to refuse a bad flag on."""
    import workloads
    from harness.sweep import make_trial
    from harness.trial import execute
    from results.store import Store

    wl = workloads.get("harness_probe")
    trial = make_trial(wl, "torch", wl.Params(), sweep="h", timeout_s=60)
    Store(str(folder)).write(trial, execute(trial), "test")


def prepare(tmp_path: Path, content: str | bytes | None, args: list[str]) -> list[str]:
    spec = tmp_path / "spec.yaml"
    if content is not None:
        spec.write_bytes(content.encode() if isinstance(content, str) else content)
    if any("{results}" in a for a in args):
        stored_results(tmp_path / "results")
    return [
        a.replace("{spec}", str(spec))
        .replace("{tmp}", str(tmp_path))
        .replace("{root}", str(ROOT))
        .replace("{results}", str(tmp_path / "results"))
        for a in args
    ]


def test_the_table_has_at_least_100_cases_with_distinct_ids():
    ids = [case[0] for case in SPECS]
    assert len(ids) >= 100 and len(set(ids)) == len(ids)


@pytest.mark.parametrize("content, args, expected", [case[1:] for case in SPECS], ids=[case[0] for case in SPECS])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, monkeypatch, content, args, expected):
    monkeypatch.chdir(tmp_path)  # a default --out (runs/...) would land here
    argv = prepare(tmp_path, content, args)
    before = tree(tmp_path)
    started = time.monotonic()
    result = CliRunner().invoke(app, argv)
    took = time.monotonic() - started
    stderr = result.stderr.strip()
    assert result.exit_code == 2, (result.exit_code, result.exception, result.output[-2000:])
    assert "Traceback" not in result.output and "\n" not in stderr, stderr
    assert stderr.startswith("error: ") and expected in stderr, stderr
    assert len(stderr) <= 600
    assert tree(tmp_path) == before
    assert took < 10, f"{took:.1f} s to refuse"


@pytest.mark.parametrize("case", ["alias-bomb", "grid-10-to-7-points", "int-beyond-64-bits", "name-dotdot"])
def test_hostile_specs_fail_fast_in_a_real_process(tmp_path, case):
    """The same refusals from the installed command: quick, small, and nothing but the one line."""
    content, args, expected = next(c[1:] for c in SPECS if c[0] == case)
    argv = prepare(tmp_path, content, args)
    before = tree(tmp_path)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", *argv], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    took = time.monotonic() - started
    assert done.returncode == 2 and done.stdout == "", done.stderr
    assert done.stderr.count("\n") == 1 and expected in done.stderr, done.stderr
    assert tree(tmp_path) == before
    assert took < 20, f"{took:.1f} s"
