"""The ``deeperbench`` command: run, report, compare, list (DESIGN.md, "CLI")."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from harness.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Benchmark sweeps of the thesis' algorithms on Ray; Parquet results; HTML reports.")
out_console = Console(soft_wrap=True)
err_console = Console(stderr=True)


def _fail(err: UserError) -> None:
    err_console.print(f"error: {err}", markup=False, soft_wrap=True)
    raise typer.Exit(2)


@app.command()
def run(
    spec: Path = typer.Argument(..., help="sweep YAML (one or more documents)"),
    out: str = typer.Option("runs/results", help="results directory or pyarrow URI"),
    address: Optional[str] = typer.Option(None, help="Ray cluster to join; default: RAY_ADDRESS, else an embedded instance"),
    executor: str = typer.Option("ray", help="ray | local (child processes, no Ray)"),
    backend: Optional[str] = typer.Option(None, help="run only this backend"),
    device: Optional[str] = typer.Option(None, help="override the spec's device: cpu | cuda | tpu | auto"),
    force: bool = typer.Option(False, help="run again trials already stored ok"),
) -> None:
    """Run a sweep; trials already stored ok are skipped, so running it again resumes."""
    from harness import runner

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        summary = runner.run(str(spec), out, executor_name=executor, address=address, backend=backend,
                             device=device, force=force, console=err_console)
    except UserError as err:
        _fail(err)
    counts = ", ".join(f"{n} {s}" for s, n in sorted(summary.counts.items())) or "nothing to run"
    out_console.print(f"{counts}; {summary.already_done} already stored ok.", markup=False)
    out_console.print(f"results: {summary.out}", markup=False)
    out_console.print(f"report:  deeperbench report {summary.out}", markup=False)


@app.command()
def search(
    spec: Path = typer.Argument(..., help="sweep YAML with a search section"),
    trials: int = typer.Option(..., help="trials in the study in total (a search run again resumes)"),
    parallel: int = typer.Option(2, help="trials in flight at once"),
    storage: Optional[str] = typer.Option(None, help="Optuna RDB URL; default sqlite:///OUT/optuna.db"),
    out: str = typer.Option("runs/search", help="results directory"),
    address: Optional[str] = typer.Option(None, help="Ray cluster to join"),
    executor: str = typer.Option("ray", help="ray | local"),
    backend: Optional[str] = typer.Option(None, help="the backend to search on, if the spec lists several"),
    device: Optional[str] = typer.Option(None, help="override the spec's device"),
) -> None:
    """Optuna search over the spec's search.space; trials run in parallel on Ray and go to the store."""
    from harness.search import run_search

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        s = run_search(str(spec), trials, out, parallel=parallel, storage=storage, executor_name=executor,
                       address=address, backend=backend, device=device, console=err_console)
    except UserError as err:
        _fail(err)
    out_console.print(f"study {s.study}: {s.finished} complete trials ({s.asked_now} asked now); storage {s.storage}",
                      markup=False)
    if s.best_number is None:
        out_console.print("no feasible complete trial yet", markup=False)
    else:
        out_console.print(f"best: trial {s.best_number}, value {s.best_value:.6g}, params {s.best_params}", markup=False)
    out_console.print(f"report:  deeperbench report {out}", markup=False)


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
def status(job_id: str = typer.Argument(..., metavar="JOB"),
           address: str = typer.Option(..., help="the cluster's dashboard URL")) -> None:
    """Status of a submitted job."""
    from harness import jobs

    try:
        out_console.print(jobs.status(job_id, address), markup=False)
    except UserError as err:
        _fail(err)


@app.command()
def logs(job_id: str = typer.Argument(..., metavar="JOB"),
         address: str = typer.Option(..., help="the cluster's dashboard URL")) -> None:
    """What a submitted job printed so far."""
    from harness import jobs

    try:
        out_console.print(jobs.logs(job_id, address), markup=False, highlight=False)
    except UserError as err:
        _fail(err)


@app.command()
def report(
    directory: str = typer.Argument(..., metavar="DIR", help="results directory or URI"),
    output: Optional[str] = typer.Option(None, "-o", "--output", help="HTML file; default DIR/report.html"),
) -> None:
    """Write one self-contained HTML report of the results in DIR."""
    from results.report import build

    path, n_figs = build(directory, output)
    out_console.print(f"report with {n_figs} figures: {Path(path).resolve()}", markup=False)


@app.command()
def compare(
    directory: str = typer.Argument(..., metavar="DIR"),
    metric: str = typer.Option(..., help="metric to compare"),
    by: str = typer.Option("backend", help="column to compare across (backend, device_kind)"),
    baseline: Optional[str] = typer.Option(None, help="results of an earlier run to compare against"),
    fail_above: Optional[float] = typer.Option(None, help="exit 1 if a ratio to the baseline is worse than this"),
) -> None:
    """Print a metric by backend (or against --baseline) with ratios and the metric's direction."""
    from results import compare as cmp

    try:
        df, m = cmp.against_baseline(directory, baseline, metric) if baseline else cmp.by_backend(directory, metric, by)
    except UserError as err:
        _fail(err)
    table = Table(title=f"{metric} [{m.unit}], {m.direction} is better, {m.reduce} per trial, median over repeats")
    for col in df.columns:
        table.add_column(str(col))
    for row in df.itertuples(index=False):
        table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row))
    out_console.print(table)
    if baseline and fail_above is not None:
        worse = cmp.worse_than(df["ratio"], m, fail_above)
        if worse.any():
            err_console.print(f"{int(worse.sum())} configuration(s) worse than {fail_above}x the baseline", markup=False)
            raise typer.Exit(1)


@app.command("list")
def list_() -> None:
    """List the workloads with their parameters and metrics."""
    import workloads

    for name in workloads.names():
        wl = workloads.get(name)
        out_console.print(f"[bold]{name}[/bold] v{wl.version}  backends: {', '.join(wl.backends)}")
        for pname, field in wl.Params.model_fields.items():
            ann = getattr(field.annotation, "__name__", None) or str(field.annotation).replace("typing.", "")
            out_console.print(f"  param  {pname}: {ann} = {field.default!r}", markup=False)
        for m in wl.metrics:
            out_console.print(f"  metric {m.name} [{m.unit}] {m.direction} is better, {m.reduce} per trial", markup=False)


if __name__ == "__main__":
    app()
