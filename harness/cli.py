"""The ``deeperbench`` command: run, search, report, compare, list (docs/design.md, "CLI").

Exit status: 0 when done (every trial ok or skipped); 1 when a trial failed, crashed, ran out of
memory or timed out (after everything is stored), or a compare gate tripped; 2 on bad input
(one line on stderr, nothing written).
"""

from __future__ import annotations

import logging
import typing
from importlib.metadata import PackageNotFoundError, entry_points
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.text import Text

from core.errors import ClusterLost, UserError
from core.trial import FAILURES, STATUSES
from harness.executors import REGISTRY as EXECUTORS
from harness.spec import DEVICES
from results.compare import BY, FORMATS

out_console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


class _OneLineErrors(typer.core.TyperGroup):
    """A bad flag or argument is one ``error:`` line on stderr and exit status 2, as bad input is."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        import sys

        from typer._click.exceptions import ClickException, NoArgsIsHelpError  # typer vendors click

        kwargs["standalone_mode"] = False
        try:
            code = super().main(*args, **kwargs)
        except NoArgsIsHelpError as err:
            err.show()
            sys.exit(err.exit_code)
        except ClickException as err:
            ctx = getattr(err, "ctx", None)
            command = f" (see: {ctx.command_path} --help)" if ctx else ""
            err_console.print(
                f"error: {' '.join(err.format_message().split())}{command}", markup=False, highlight=False
            )
            sys.exit(err.exit_code)
        except typer.Abort:
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=_OneLineErrors,
    help="Benchmark sweeps of the thesis' algorithms on Ray; Parquet results; HTML reports.",
)

_EXECUTOR_HELP = f"where trials run: {' | '.join(EXECUTORS.names())} (local: child processes, no Ray)"
_DEVICE_HELP = f"override the spec's device: {' | '.join(DEVICES)}"
_FAILURES_HELP = f"exit 0 even when a trial ends {', '.join(FAILURES)}"
_VERBOSE_HELP = "let Ray print its own output (worker logs, notices) here instead of OUT/_logs/"


def _fail(err: UserError) -> None:
    err_console.print(f"error: {err}", markup=False, soft_wrap=True, highlight=False)
    raise typer.Exit(2)


def _version(value: bool) -> None:
    if value:
        try:
            number = dist_version("deeperbench")
        except PackageNotFoundError:
            number = "unknown (not installed)"
        out_console.print(f"deeperbench {number}", markup=False, highlight=False)
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="print the version and exit"
    ),
) -> None:
    """Benchmark sweeps of the thesis' algorithms on Ray; Parquet results; HTML reports."""


def _counts(counts: dict[str, int]) -> str:
    """``3 ok, 1 failed`` in STATUSES order; statuses with no trial left out."""
    return ", ".join(f"{counts[s]} {s}" for s in STATUSES if counts.get(s)) or "no trial run"


def _trials(n: int) -> str:
    return f"{n} trial" if n == 1 else f"{n} trials"


def _where_errors(failed: int, out: str) -> None:
    if failed:
        out_console.print(
            f"full tracebacks: deeperbench report {out} (failures table), or the 'error' column "
            f"of results.store.Store('{out}').read()",
            markup=False,
            highlight=False,
        )


def _exit_for(failed: int, allow_failures: bool) -> None:
    if failed and not allow_failures:
        raise typer.Exit(1)


def _dry_run(spec: Path, out: str, backend: str | None, device: str | None, force: bool, max_trials: int) -> None:
    from harness.runner import dry_run

    try:
        planned = dry_run(str(spec), out, backend=backend, device=device, force=force, max_trials=max_trials)
    except UserError as err:
        _fail(err)
    for p in planned:
        t = p.trial
        params = ", ".join(f"{k}={v}" for k, v in t.params.items())
        action = "run " if p.runs else "skip"
        line = f"{action} {p.stored or '-':<8} {t.sweep}/{t.workload} {t.backend} {t.device} repeat {t.repeat}"
        out_console.print(f"{line} {t.key}  {params}", markup=False, highlight=False)
    runs = sum(p.runs for p in planned)
    out_console.print(
        f"dry run: {_trials(len(planned))}, {runs} would run, {len(planned) - runs} already stored ok; "
        f"nothing started, nothing written",
        markup=False,
        highlight=False,
    )


@app.command()
def run(
    spec: Path = typer.Argument(..., help="sweep YAML (one or more documents)"),
    out: str = typer.Option("runs/results", help="results directory or pyarrow URI"),
    address: str | None = typer.Option(
        None, help="Ray cluster to join; default: RAY_ADDRESS, else an embedded instance"
    ),
    executor: str = typer.Option("ray", help=_EXECUTOR_HELP),
    backend: str | None = typer.Option(None, help="run only this backend"),
    device: str | None = typer.Option(None, help=_DEVICE_HELP),
    force: bool = typer.Option(False, help="run again trials already stored ok"),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="list the trials a run would start (and those stored); start nothing, write nothing"
    ),
    allow_failures: bool = typer.Option(False, "--allow-failures", help=_FAILURES_HELP),
    verbose: bool = typer.Option(False, "--verbose", "-v", help=_VERBOSE_HELP),
    max_trials: int = typer.Option(1_000_000, "--max-trials", min=1, help="refuse a spec with more trials than this"),
) -> None:
    """Run a sweep; trials already stored ok are skipped, so running it again resumes.

    Exits 1 when a trial ends failed, crashed, oom or timeout (after storing every trial), 3 when the
    cluster's head is lost mid-run (what is stored stays; the same command resumes).
    """
    from harness import runner

    if dry_run:
        _dry_run(spec, out, backend, device, force, max_trials)
        return
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        summary = runner.run(
            str(spec),
            out,
            executor_name=executor,
            address=address,
            backend=backend,
            device=device,
            force=force,
            console=err_console,
            verbose=verbose,
            max_trials=max_trials,
        )
    except UserError as err:
        _fail(err)
    except ClusterLost as err:  # the head is gone: what is stored stays; the same command resumes
        err_console.print(f"error: {err}", markup=False, soft_wrap=True, highlight=False)
        raise typer.Exit(3) from None
    out_console.print(f"results: {summary.out}", markup=False, highlight=False)
    out_console.print(f"report:  deeperbench report {summary.out}", markup=False, highlight=False)
    _where_errors(summary.failed, summary.out)
    total = sum(summary.counts.values())
    out_console.print(
        f"{_trials(total)}: {_counts(summary.counts)}; {summary.already_done} already stored ok; "
        f"{summary.duration_s:.1f} s",
        markup=False,
        highlight=False,
    )
    _exit_for(summary.failed, allow_failures)


@app.command()
def search(
    spec: Path = typer.Argument(..., help="sweep YAML with a search section"),
    trials: int = typer.Option(..., help="trials in the study in total (a search run again resumes)"),
    parallel: int = typer.Option(2, help="trials in flight at once"),
    storage: str | None = typer.Option(
        None, help="sqlite:///PATH (default OUT/optuna.db), postgresql://USER@HOST:PORT/DB or journal:///PATH"
    ),
    heartbeat_s: int = typer.Option(
        60, "--heartbeat-s", help="seconds between heartbeats of a running trial; stale (FAIL) after twice that"
    ),
    out: str = typer.Option("runs/search", help="results directory"),
    address: str | None = typer.Option(None, help="Ray cluster to join"),
    executor: str = typer.Option("ray", help=_EXECUTOR_HELP),
    backend: str | None = typer.Option(None, help="the backend to search on, if the spec lists several"),
    device: str | None = typer.Option(None, help=_DEVICE_HELP),
    allow_failures: bool = typer.Option(False, "--allow-failures", help=_FAILURES_HELP),
    verbose: bool = typer.Option(False, "--verbose", "-v", help=_VERBOSE_HELP),
) -> None:
    """Optuna search over the spec's search.space; trials run in parallel on Ray and go to the store.

    Exits 1 when a trial run now ends failed, crashed, oom or timeout.
    """
    from harness.search import run_search

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        s = run_search(
            str(spec),
            trials,
            out,
            parallel=parallel,
            storage=storage,
            heartbeat_s=heartbeat_s,
            executor_name=executor,
            address=address,
            backend=backend,
            device=device,
            console=err_console,
            verbose=verbose,
        )
    except UserError as err:
        _fail(err)
    out_console.print(
        f"study {s.study}: {s.finished} complete trials ({s.asked_now} asked now); storage {s.storage}",
        markup=False,
        highlight=False,
    )
    if s.best_number is None:
        out_console.print("no feasible complete trial yet", markup=False)
    else:
        out_console.print(
            f"best: trial {s.best_number}, value {s.best_value:.6g}, params {s.best_params}",
            markup=False,
            highlight=False,
        )
    out_console.print(f"report:  deeperbench report {out}", markup=False, highlight=False)
    _where_errors(s.failed, out)
    out_console.print(f"{_trials(sum(s.counts.values()))} run now: {_counts(s.counts)}", markup=False, highlight=False)
    _exit_for(s.failed, allow_failures)


@app.command()
def submit(
    spec: Path = typer.Argument(..., help="sweep YAML inside the project"),
    address: str = typer.Option(..., help="the cluster's dashboard, e.g. http://HEAD:8265"),
    out: str = typer.Option("$HOME/deeperbench-results", help="results path on the cluster, or a pyarrow URI"),
    python: str = typer.Option("python", help="the Python the cluster runs the job with"),
) -> None:
    """Submit a sweep as a Ray job (Jobs API); prints the job id and how to follow it."""
    from harness import jobs

    try:
        job_id = jobs.submit(str(spec), address, out, python=python)
    except UserError as err:
        _fail(err)
    out_console.print(f"submitted {job_id}", markup=False)
    out_console.print(f"follow:  deeperbench status {job_id} --address {address}", markup=False)
    out_console.print(f"         deeperbench logs {job_id} --address {address}", markup=False)


@app.command()
def status(
    job_id: str = typer.Argument(..., metavar="JOB"),
    address: str = typer.Option(..., help="the cluster's dashboard URL"),
) -> None:
    """Status of a submitted job."""
    from harness import jobs

    try:
        out_console.print(jobs.status(job_id, address), markup=False)
    except UserError as err:
        _fail(err)


@app.command()
def logs(
    job_id: str = typer.Argument(..., metavar="JOB"),
    address: str = typer.Option(..., help="the cluster's dashboard URL"),
) -> None:
    """What a submitted job printed so far."""
    from harness import jobs

    try:
        out_console.print(jobs.logs(job_id, address), markup=False, highlight=False)
    except UserError as err:
        _fail(err)


@app.command()
def report(
    directory: str = typer.Argument(..., metavar="DIR", help="results directory or URI"),
    output: str | None = typer.Option(
        None, "-o", "--output", "--html", help="HTML file (a local path or a URI); default DIR/_report.html"
    ),
) -> None:
    """Write one self-contained HTML report of the results in DIR (exit 2, nothing written, when it holds none)."""
    from results.report import build

    try:
        path, n_figs = build(directory, output)
    except UserError as err:
        _fail(err)
    shown_path = path if "://" in path else Path(path).resolve()  # s3://bucket/prefix/_report.html stays a URI
    out_console.print(f"report with {n_figs} figures: {shown_path}", markup=False, highlight=False)


@app.command()
def compare(
    directory: str = typer.Argument(..., metavar="DIR"),
    metric: str = typer.Option(..., help="metric to compare; every workload here that records it is shown"),
    by: str = typer.Option(
        "backend", help=f"column to compare across: {' | '.join(BY)} | a parameter (p_NAME or NAME)"
    ),
    workload: str | None = typer.Option(None, help="only this workload's rows"),
    baseline: str | None = typer.Option(None, help="results of an earlier run to compare against"),
    fail_above: float | None = typer.Option(None, help="with --baseline: exit 1 if a ratio is worse than this"),
    format: str = typer.Option("table", "--format", help=f"output: {' | '.join(FORMATS)}"),
) -> None:
    """Print a metric's medians by backend (or --by, or against --baseline) with ratios and its direction."""
    import pyarrow as pa

    from results import compare as cmp

    try:
        if format not in FORMATS:
            raise UserError(f"--format: unknown format '{format}'; allowed: {', '.join(FORMATS)}")
        if fail_above is not None and not baseline:
            raise UserError("--fail-above: needs --baseline (the run to compare against)")
        if fail_above is not None and not fail_above > 0:
            raise UserError(f"--fail-above: must be a ratio > 0, got {fail_above}")
        c = (
            cmp.against_baseline(directory, baseline, metric, workload)
            if baseline
            else cmp.compare(directory, metric, by, workload)
        )
    except UserError as err:
        _fail(err)
    except (OSError, pa.ArrowException) as err:
        _fail(UserError(f"DIR: cannot read the results: {type(err).__name__}: {err}"))
    except Exception as err:
        err_console.print(
            f"error: compare failed: {type(err).__name__}: {' '.join(str(err).split())[:300]} "
            f"(a bug: please report it with this line)",
            markup=False,
            highlight=False,
        )
        raise typer.Exit(1) from None
    render = {"markdown": cmp.to_markdown, "csv": cmp.to_csv, "json": cmp.to_json}.get(format)
    if render is None:
        out_console.print(cmp.to_rich(c))
    else:
        typer.echo(render(c).rstrip("\n"))
    if fail_above is not None:
        worse = c.worse_than(fail_above)
        if worse.any():
            err_console.print(
                f"{int(worse.sum())} configuration(s) worse than {fail_above}x the baseline",
                markup=False,
                highlight=False,
            )
            raise typer.Exit(1)


@app.command()
def compact(directory: str = typer.Argument(..., metavar="DIR", help="results directory or URI")) -> None:
    """Merge each sweep's per-trial files into one file per workload (atomic, idempotent; runs are locked out)."""
    from core.paths import check_out
    from harness.lock import RunLock
    from results.compact import compact as merge
    from results.store import Store

    try:
        check_out(directory, "DIR")
        if "://" not in directory.removeprefix("file://") and not Path(directory.removeprefix("file://")).is_dir():
            raise UserError(f"DIR: '{directory}' is not a results folder")
        with RunLock(directory):
            merged = merge(Store(directory))
    except UserError as err:
        _fail(err)
    for m in merged:
        out_console.print(
            f"{m.folder}: {m.files_merged} files -> {m.path} ({_trials(m.trials)}, {m.rows} rows)",
            markup=False,
            highlight=False,
        )
    out_console.print(
        f"compacted {len(merged)} folder(s) of {directory}" if merged else f"nothing to compact in {directory}",
        markup=False,
        highlight=False,
    )


def _type_text(annotation: Any) -> str:
    """``Literal['euler', 'heun']``, ``int >= 1``, ``float > 0 | None``: the values a parameter allows."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return f"Literal[{', '.join(repr(a) for a in args)}]"
    if origin is typing.Annotated:
        return _type_text(args[0]) + _bounds(annotation.__metadata__)
    if origin is typing.Union or type(annotation).__name__ == "UnionType":
        return " | ".join(_type_text(a) for a in args)
    if annotation is type(None):
        return "None"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


_BOUNDS = (
    ("gt", ">"),
    ("ge", ">="),
    ("lt", "<"),
    ("le", "<="),
    ("multiple_of", "multiple of"),
    ("min_length", "length >="),
    ("max_length", "length <="),
)


def _bounds(metadata: Any) -> str:
    """`` >= 1 <= 64`` from a field's annotated-types constraints (pydantic keeps them as metadata)."""
    parts = [
        f" {sign} {getattr(item, attr)}"
        for attr, sign in _BOUNDS
        for item in metadata
        if getattr(item, attr, None) is not None
    ]
    return "".join(parts)


def _field_text(field: Any) -> str:
    """A parameter's type with its bounds next to the value they bound: ``float > 0.0 | None``."""
    text, bounds = _type_text(field.annotation), _bounds(field.metadata)
    if bounds and text.endswith(" | None"):
        return text[: -len(" | None")] + bounds + " | None"
    return text + bounds


@app.command("list")
def list_() -> None:
    """List the workloads (built in and plugins) with their parameters' allowed values and their metrics."""
    import workloads

    plugins = {ep.name: ep.value for ep in entry_points(group="deeperbench.workloads")}
    broken = 0
    for name in workloads.names():
        try:
            wl = workloads.get(name)
        except Exception as err:
            broken += 1
            err_console.print(
                f"error: workload {name} cannot be loaded: {type(err).__name__}: {' '.join(str(err).split())[:300]}",
                markup=False,
                highlight=False,
            )
            continue
        origin = f"  plugin: {plugins[name]}" if name in plugins else ""
        out_console.print(Text.assemble((name, "bold"), f" v{wl.version}  backends: {', '.join(wl.backends)}{origin}"))
        for pname, field in wl.Params.model_fields.items():
            text = _field_text(field)
            out_console.print(f"  param  {pname}: {text} = {field.default!r}", markup=False, highlight=False)
        for m in wl.metrics:
            out_console.print(
                f"  metric {m.name} [{m.unit}] {m.direction} is better, {m.reduce} per trial",
                markup=False,
                highlight=False,
            )
    if broken:
        raise typer.Exit(1)


@app.command()
def doctor(
    specs: list[Path] = typer.Argument(None, metavar="[SPEC]...", help="sweep YAMLs to check against the nodes"),
    address: str | None = typer.Option(None, help="Ray cluster whose every node to describe; default: this machine"),
    device: str | None = typer.Option(None, help=_DEVICE_HELP),
) -> None:
    """Versions, the devices torch and JAX see and Ray's resources, per node; whether each spec can run.

    Exit 0 when every spec can run, 1 when one cannot (the line says what to install), 2 on bad input.
    """
    from harness import doctor as doc

    if device is not None and device not in DEVICES:
        _fail(UserError(f"--device: '{device}' is not allowed; allowed: {', '.join(DEVICES)}"))
    try:
        nodes = doc.describe_cluster(address) if address else [doc.describe_here()]
        verdicts = doc.check_specs([str(p) for p in specs or []], nodes, device)
    except UserError as err:
        _fail(err)
    for node in nodes:
        out_console.print(Text(node.name, "bold"))
        for field, value in doc.as_rows(node):
            out_console.print(f"  {field:<14} {value}", markup=False, highlight=False)
    for v in verdicts:
        out_console.print(f"{'ok  ' if v.ok else 'FAIL'} {v.sweep}: {v.reason}", markup=False, highlight=False)
    if not all(v.ok for v in verdicts):
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
