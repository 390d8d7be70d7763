"""``deeperbench search``: an Optuna study over a spec's ``search.space``, its trials run in parallel
on the executor (ask/tell), every trial also stored in the results store.

The study is named after the sweep and lives in a real database (``sqlite:///<out>/optuna.db`` by
default). ``trials`` is the study's total: a search run again marks trials an interrupted run left
RUNNING as FAIL and asks only for the rest.
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections import Counter
from collections.abc import Iterator

from rich.console import Console

from harness import executors
from harness.errors import UserError
from harness.executors import RayLog
from harness.paths import check_out
from harness.runner import announce, git_sha
from harness.spec import DEVICES, Range, Sweep, load_specs, one_line_error
from harness.sweep import Trial, trial_key
from harness.trial import FAILURES, Outcome, first_line
from harness.workload import Workload, metric_map
from results.aggregate import reduce_records
from results.store import Store


@dataclasses.dataclass
class SearchSummary:
    """Where the study stands after this run."""

    study: str
    storage: str
    finished: int
    asked_now: int
    best_number: int | None
    best_value: float | None
    best_params: dict
    counts: Counter = dataclasses.field(default_factory=Counter)
    """Statuses of the trials run now (a sampled point the parameters refuse counts as failed)."""
    log_path: str | None = None

    @property
    def failed(self) -> int:
        """Trials run now that ended failed, crashed, oom or timeout."""
        return sum(n for status, n in self.counts.items() if status in FAILURES)


def default_storage(out: str) -> str:
    """``sqlite:///<out>/optuna.db``; ``out`` must then be a local directory."""
    if "://" in out:
        raise UserError(f"--storage: give an Optuna RDB URL when --out is not a local path (got --out {out})")
    os.makedirs(out, exist_ok=True)
    return f"sqlite:///{os.path.abspath(out)}/optuna.db"


def _distributions(sweep: Sweep) -> dict:
    import optuna.distributions as d

    out = {}
    for name, spec in sweep.search.space.items():
        if isinstance(spec, Range):
            out[name] = (
                d.IntDistribution(int(spec.low), int(spec.high), log=spec.log)
                if spec.int
                else d.FloatDistribution(spec.low, spec.high, log=spec.log)
            )
        else:
            out[name] = d.CategoricalDistribution(spec)
    return out


def _only_search_sweep(spec: str, backend: str | None) -> tuple[Sweep, Workload]:
    sweeps = [(s, w) for s, w in load_specs(spec) if s.search is not None]
    if len(sweeps) != 1:
        raise UserError(f"search: the spec needs exactly one sweep with a search section; found {len(sweeps)}")
    sweep, workload = sweeps[0]
    for key, value in sweep.grid.items():
        if isinstance(value, list):
            raise UserError(
                f"grid.{key}: a search fixes every grid parameter; give one value, or put it in search.space"
            )
    overlap = sorted(set(sweep.grid) & set(sweep.search.space))
    if overlap:
        raise UserError(
            f"search.space: {', '.join(overlap)} also fixed in grid; a parameter is either fixed or searched"
        )
    names = [backend] if backend else sweep.backends
    if len(names) != 1 or names[0] not in workload.backends:
        raise UserError(f"backends: a search runs on one backend; give one in the spec or --backend (got {names})")
    return sweep.model_copy(update={"backends": names}), workload


def _feasibility(sweep: Sweep, workload: Workload, outcome: Outcome) -> list[float]:
    """Optuna's constraint values (<= 0 is feasible) for each ``search.constraints`` entry."""
    metrics = metric_map(workload)
    values = []
    for c in sweep.search.constraints:
        v = reduce_records(outcome.records, metrics[c.metric])
        if v is None:
            values.append(float("inf"))
            continue
        values.append(
            max(
                (v - c.max) if c.max is not None else float("-inf"), (c.min - v) if c.min is not None else float("-inf")
            )
        )
    return values


def run_search(
    spec: str,
    n_trials: int,
    out: str,
    *,
    parallel: int = 2,
    storage: str | None = None,
    executor_name: str = "ray",
    address: str | None = None,
    backend: str | None = None,
    device: str | None = None,
    console: Console | None = None,
    verbose: bool = False,
) -> SearchSummary:
    """Bring the study of ``spec`` to ``n_trials`` trials in total; return its state and best trial."""
    import optuna
    import pydantic
    from optuna.trial import TrialState
    from sqlalchemy.exc import SQLAlchemyError

    console = console or Console(stderr=True)
    if n_trials < 1 or parallel < 1:
        raise UserError(f"--trials and --parallel must be >= 1 (got {n_trials}, {parallel})")
    if device is not None and device not in DEVICES:
        raise UserError(f"--device: unknown device '{device}'; allowed: {', '.join(DEVICES)}")
    sweep, workload = _only_search_sweep(spec, backend)
    check_out(out)
    storage = storage or default_storage(out)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    constrained = bool(sweep.search.constraints)
    sampler = optuna.samplers.TPESampler(seed=sweep.base_seed)
    try:
        study = optuna.create_study(
            study_name=sweep.name,
            storage=storage,
            direction=sweep.search.direction,
            sampler=sampler,
            load_if_exists=True,
        )
    except (ImportError, ValueError, optuna.exceptions.StorageInternalError, SQLAlchemyError) as err:
        raise UserError(f"--storage: cannot open '{storage}': {' '.join(str(err).split())[:200]}") from None
    for stale in study.get_trials(deepcopy=False, states=[TrialState.RUNNING, TrialState.WAITING]):
        study.tell(stale.number, state=TrialState.FAIL)
        console.print(f"trial {stale.number} of an interrupted search marked FAIL", markup=False)
    to_ask = max(0, n_trials - len(study.trials))
    distributions = _distributions(sweep)
    log = RayLog(verbose=verbose)
    executor = executors.make(executor_name, address, log=log)
    store, run_id, sha = Store(out), uuid.uuid4().hex[:12], git_sha()
    counts: Counter = Counter()
    log_path = None
    metric = metric_map(workload)[sweep.search.metric]
    try:
        resolved = executor.resolve_device(device or sweep.device)
        cpus = sweep.resources.cpus or (1.0 if sweep.resources.gpus or sweep.resources.tpus else executor.node_cpus())
        pending: dict[str, optuna.trial.Trial] = {}

        def trials() -> Iterator[Trial]:
            for _ in range(to_ask):
                asked = study.ask(distributions)
                try:
                    params = workload.Params.model_validate(sweep.grid | asked.params).model_dump(mode="json")
                except pydantic.ValidationError as err:
                    study.tell(asked, state=TrialState.FAIL)
                    counts["failed"] += 1
                    console.print(f"trial {asked.number}: {one_line_error(err, 'search.space')}", markup=False)
                    continue
                key = trial_key(
                    workload.name,
                    workload.version,
                    sweep.backends[0],
                    resolved,
                    params,
                    0,
                    study=sweep.name,
                    trial_number=asked.number,
                )
                pending[key] = asked
                yield Trial(
                    key=key,
                    sweep=sweep.name,
                    workload=workload.name,
                    version=workload.version,
                    backend=sweep.backends[0],
                    device=resolved,
                    params=params,
                    repeat=0,
                    seed=sweep.base_seed + asked.number,
                    timeout_s=sweep.timeout_s,
                    num_cpus=cpus,
                    resources=sweep.resources,
                    isolation=sweep.isolation,
                    study=sweep.name,
                    trial_number=asked.number,
                )

        def on_done(trial: Trial, outcome: Outcome) -> None:
            outcome.env["git_sha"] = sha
            store.write(trial, outcome, run_id)
            counts[outcome.status] += 1
            asked = pending.pop(trial.key)
            value = reduce_records(outcome.records, metric) if outcome.status == "ok" else None
            if value is None:
                study.tell(asked, state=TrialState.FAIL)
                console.print(
                    f"trial {trial.trial_number}: {outcome.status} {first_line(outcome.error) or 'no ' + metric.name}",
                    markup=False,
                )
                return
            if constrained:
                values = _feasibility(sweep, workload, outcome)
                asked.set_user_attr("constraints", values)  # kept for best_trial and the report
                for i, v in enumerate(values):
                    asked.set_constraint(f"c{i}:{sweep.search.constraints[i].metric}", v)
            study.tell(asked, value)
            console.print(f"trial {trial.trial_number}: {metric.name} = {value:.4g} {dict(asked.params)}", markup=False)

        if to_ask:
            executor.check(
                Trial(
                    key="capacity",
                    sweep=sweep.name,
                    workload=workload.name,
                    version=workload.version,
                    backend=sweep.backends[0],
                    device=resolved,
                    params={},
                    repeat=0,
                    seed=0,
                    timeout_s=sweep.timeout_s,
                    num_cpus=cpus,
                    resources=sweep.resources,
                    isolation=sweep.isolation,
                )
            )
            log_path = announce(executor, log, out, console)
            executor.run(trials(), on_done, max_in_flight=parallel)
    finally:
        executor.close()
    best = best_trial(study, constrained)
    return SearchSummary(
        study=sweep.name,
        storage=storage,
        finished=len([t for t in study.trials if t.state == TrialState.COMPLETE]),
        asked_now=to_ask,
        best_number=best.number if best else None,
        best_value=best.value if best else None,
        best_params=dict(best.params) if best else {},
        counts=counts,
        log_path=log_path,
    )


def best_trial(study, constrained: bool):
    """The best complete trial; with constraints, the best feasible one (None if there is none)."""
    from optuna.trial import TrialState

    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    if constrained:
        done = [t for t in done if all(c <= 0 for c in t.user_attrs.get("constraints", [1.0]))]
    if not done:
        return None
    pick = min if study.direction.name == "MINIMIZE" else max
    return pick(done, key=lambda t: t.value)
