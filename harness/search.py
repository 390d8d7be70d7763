"""``deeperbench search``: an Optuna study over a spec's ``search.space``, its trials run in parallel
on the executor (ask/tell), every trial also stored in the results store.

The study is named after the sweep and lives in a real database (``sqlite:///<out>/optuna.db`` by
default, PostgreSQL for a cluster: ``harness.storage``). ``trials`` is the study's total: a search run
again marks trials an interrupted run left RUNNING as FAIL (at once, or once their heartbeat is stale)
and asks only for the rest. The runner's ``Session`` runs, stores and counts the trials.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections import Counter
from collections.abc import Iterator
from typing import Any

from rich.console import Console

from core.aggregate import reduce_records
from core.errors import UserError
from core.paths import check_out
from core.trial import FAILURES, Outcome, Trial
from core.workload import Workload, metric_map
from harness.runner import Session
from harness.spec import DEVICES, Range, Search, Sweep, load_specs, one_line_error
from harness.storage import HEARTBEAT_S, Heartbeat, default_storage, fail_stale, heartbeats, open_storage, shown
from harness.sweep import make_trial
from harness.trial import first_line
from results.search_report import best_trial


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


def _search(sweep: Sweep) -> Search:
    """The sweep's search section (always there: ``_only_search_sweep`` keeps only sweeps that have one)."""
    assert sweep.search is not None
    return sweep.search


def _distributions(sweep: Sweep) -> dict:
    import optuna.distributions as d

    out = {}
    for name, spec in _search(sweep).space.items():
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
    overlap = sorted(set(sweep.grid) & set(_search(sweep).space))
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
    for c in _search(sweep).constraints:
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
    heartbeat_s: int = HEARTBEAT_S,
) -> SearchSummary:
    """Bring the study of ``spec`` to ``n_trials`` trials in total; return its state and best trial.

    The runner's ``Session`` runs the trials (lock, scheduling, storing, progress); Optuna is asked for
    each trial's parameters as a worker frees up and told its value as it is stored. Trials a killed
    search left RUNNING are failed as ``harness.storage`` describes.
    """
    import optuna
    from optuna.trial import TrialState

    console = console or Console(stderr=True)
    if n_trials < 1 or parallel < 1:
        raise UserError(f"--trials and --parallel must be >= 1 (got {n_trials}, {parallel})")
    if device is not None and device not in DEVICES:
        raise UserError(f"--device: unknown device '{device}'; allowed: {', '.join(DEVICES)}")
    sweep, workload = _only_search_sweep(spec, backend)
    check_out(out)
    opened = open_storage(storage, heartbeat_s=heartbeat_s) if storage else None  # unreachable: fails here
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with Session(out, executor_name, address, verbose, console) as session:
        store = session.hold()
        store.remove_temporary(sweep.name)  # what a killed search left half-written
        store.statuses(sweep.name, quarantine=True)
        url = storage or default_storage(out)
        study = _open_study(sweep, url, opened or open_storage(url, heartbeat_s=heartbeat_s))
        every_running = storage is None  # the held lock keeps the default database to this search
        for number in fail_stale(study, every_running=every_running):
            console.print(f"trial {number} of an interrupted search marked FAIL", markup=False)
        to_ask = max(0, n_trials - len(study.trials))
        if to_ask:
            asker = _Asker(
                sweep, workload, study, session, device=device, heartbeat_s=heartbeat_s, every_running=every_running
            )
            asker.run(to_ask, parallel)
    if heartbeats(study):  # a dead driver's trials that went stale while this one ran
        for number in fail_stale(study, every_running=False):
            console.print(f"trial {number} of an interrupted search marked FAIL", markup=False)
    constrained = bool(_search(sweep).constraints)
    best = best_trial(study, constrained)
    return SearchSummary(
        study=sweep.name,
        storage=shown(url),
        finished=len([t for t in study.trials if t.state == TrialState.COMPLETE]),
        asked_now=to_ask,
        best_number=best.number if best else None,
        best_value=best.value if best else None,
        best_params=dict(best.params) if best else {},
        counts=session.counts,
        log_path=session.log_path,
    )


def _open_study(sweep: Sweep, url: str, storage: Any) -> Any:
    """The study named after the sweep, created on first use (its sampler seeded by ``base_seed``)."""
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return optuna.create_study(
            study_name=sweep.name,
            storage=storage,
            direction=_search(sweep).direction,
            sampler=optuna.samplers.TPESampler(seed=sweep.base_seed),
            load_if_exists=True,
        )
    except (ImportError, ValueError, OSError, optuna.exceptions.StorageInternalError, SQLAlchemyError) as err:
        raise UserError(f"--storage: cannot open '{shown(url)}': {' '.join(str(err).split())[:200]}") from None


class _Asker:
    """Asks Optuna for each trial's parameters as the executor wants one, tells it each stored outcome."""

    def __init__(
        self,
        sweep: Sweep,
        workload: Workload,
        study: Any,
        session: Session,
        *,
        device: str | None,
        heartbeat_s: int,
        every_running: bool,
    ) -> None:
        self.sweep, self.workload, self.study, self.session = sweep, workload, study, session
        self.metric = metric_map(workload)[_search(sweep).metric]
        self.device = session.executor.resolve_device(device or sweep.device)
        self.node_cpus = session.executor.node_cpus()
        self.heartbeat = Heartbeat(study._storage, heartbeat_s)
        self.check_stale = not every_running and heartbeats(study)
        self.pending: dict[str, Any] = {}

    def trial(self, number: int, params: dict[str, Any]) -> Trial:
        return make_trial(
            self.workload,
            self.sweep.backends[0],
            params,
            sweep=self.sweep,
            device=self.device,
            seed=self.sweep.base_seed + number,
            node_cpus=self.node_cpus,
            study=self.sweep.name,
            trial_number=number,
        )

    def run(self, to_ask: int, parallel: int) -> None:
        self.session.executor.check(self.trial(0, {}))
        with self.heartbeat:
            self.session.execute([self.ask(to_ask)], total=to_ask, then=self.tell, max_in_flight=parallel)

    def ask(self, n: int) -> Iterator[Trial]:
        """``n`` trials, each asked of Optuna when the executor has room for it."""
        import pydantic
        from optuna.trial import TrialState

        distributions = _distributions(self.sweep)
        for _ in range(n):
            if self.check_stale:  # as Optuna's own optimize loop does before each trial
                for number in fail_stale(self.study, every_running=False):
                    self.session.console.print(f"trial {number} of an interrupted search marked FAIL", markup=False)
            with warnings.catch_warnings():  # Optuna warns that heartbeats are meant for optimize: ours beat here
                warnings.filterwarnings("ignore", message="Heartbeat of storage")
                asked = self.study.ask(distributions)
            self.heartbeat.add(asked._trial_id)
            try:
                params = self.workload.Params.model_validate(self.sweep.grid | asked.params).model_dump(mode="json")
            except pydantic.ValidationError as err:
                self.study.tell(asked, state=TrialState.FAIL)
                self.heartbeat.discard(asked._trial_id)
                self.session.tally("failed")
                self.session.console.print(f"trial {asked.number}: {one_line_error(err, 'search.space')}", markup=False)
                continue
            trial = self.trial(asked.number, params)
            self.pending[trial.key] = asked
            yield trial

    def tell(self, trial: Trial, outcome: Outcome) -> None:
        """Tell Optuna the stored outcome: the reduced metric (and constraints), or FAIL."""
        from optuna.trial import TrialState

        asked = self.pending.pop(trial.key)
        value = reduce_records(outcome.records, self.metric) if outcome.status == "ok" else None
        try:
            if value is None:
                self.study.tell(asked, state=TrialState.FAIL)
                self.session.console.print(
                    f"trial {trial.trial_number}: {outcome.status} "
                    f"{first_line(outcome.error) or 'no ' + self.metric.name}",
                    markup=False,
                )
                return
            if _search(self.sweep).constraints:
                values = _feasibility(self.sweep, self.workload, outcome)
                asked.set_user_attr("constraints", values)  # kept for best_trial and the report
                for i, v in enumerate(values):
                    asked.set_constraint(f"c{i}:{_search(self.sweep).constraints[i].metric}", v)
            self.study.tell(asked, value)
            self.session.console.print(
                f"trial {trial.trial_number}: {self.metric.name} = {value:.4g} {dict(asked.params)}", markup=False
            )
        finally:
            self.heartbeat.discard(asked._trial_id)
