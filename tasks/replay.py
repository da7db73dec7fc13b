"""Replay: the Prefect stages of the backtest around its pure parts (tasks/backtest.py, tasks/frontier.py).

Every line is measured on the same labelled rows of each period:
- loop: whatever champion the closed loop had when the period was scored (from the inference log);
- static: the first champion, never retrained;
- always: a model refitted at every period start on the trailing labelled window, with the first
  champion's tuned parameters, promoted without a gate ("retrain every period regardless");
- frontier: for every K, the best mean any schedule of K always-recipe retrains could have reached.
Each line says what its retrains cost in training CPU seconds beside its quality.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from pandera.errors import SchemaErrors
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId, FlowRunFilter
from prefect.client.schemas.filters import FlowRunFilterExpectedStartTime as StartFilter

from tasks.artifacts import load_version
from tasks.backtest import Baselines, ReplayError, ReplayPlan, measure_baselines, model_quality, period_quality
from tasks.frontier import Frontier, hindsight_frontier
from tasks.inference_log import PREDICTION, InferenceLog
from tasks.ingest import land_labels, read_source, rows_in
from tasks.registry import get_version
from tasks.score import record_labels
from tasks.settings import TimeWindow, TrainingConfig
from tasks.stages import Stopwatch
from tasks.stores import DataStore, Stores
from tasks.validate import build_schema, schema_failures

TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
LOOKBACK = timedelta(minutes=5)  # clock skew between the event and the run it started
CPU_METRIC = "training_cpu_seconds"  # logged by every training run (tasks/train.py)


@dataclass
class PeriodRow:
    period: str
    champion_version: str
    rows: int
    loop: float
    static: float
    always: float
    drift: str
    drift_share: float
    retrain_started: bool
    promoted: bool | None
    why: str
    event_to_start_seconds: float | None
    retrain_cpu_seconds: float | None = None
    signals: str = "-"  # which drift signals fired (the decision's `fired`)
    # where the champion changed at this period's start: the replaced champion's quality on it
    replaced: float = math.nan


@dataclass(frozen=True)
class Line:
    name: str
    mean: float
    retrains: int | None  # None: not drawn
    promoted: int | None
    cpu_seconds: float | None


@dataclass(frozen=True)
class ReplaySummary:
    rows: list[PeriodRow]
    lines: list[Line]
    frontier: Frontier | None
    counted: list[bool]
    recipe: str
    notes: list[str] = field(default_factory=list)
    initial_cpu_seconds: float | None = None
    # the loop's retrains whose model served a replayed period: one started after the last period
    # serves none, so the frontier is read at these counts
    serving_retrains: int = 0
    serving_promotions: int = 0
    stopwatch: Stopwatch = field(default_factory=Stopwatch)  # the replay's wall time by stage

    def line(self, name: str) -> Line:
        return next(line for line in self.lines if line.name == name)


@dataclass(frozen=True)
class ReplayData:
    """The source's validated rows under a replay, and how many fall in each period."""

    frame: pd.DataFrame
    period_rows: list[int]


def load_replay_data(config: TrainingConfig, plan: ReplayPlan) -> ReplayData:
    """The source's validated rows under the whole replay, read once; ReplayError if there is nothing to replay.

    Cheap enough to run before any server starts, so a replay window outside the data fails at once.
    """
    if not plan.periods:
        raise ReplayError(f"{config.name}: the replay has no period")
    retrain_days = config.monitoring.retrain_window_days
    earliest = min(plan.training_window(0, retrain_days).start, config.initial_window.start)
    span = TimeWindow(start=earliest, end=plan.periods[-1].end)
    raw = read_source(config, span)
    try:
        frame = build_schema(config, require_target=False).validate(raw, lazy=True)
    except SchemaErrors as error:
        failures = "; ".join(f.describe() for f in schema_failures(error, raw, f"{config.name} source")[:5])
        raise ReplayError(
            f"{config.name}: the source's rows under the replay break the data contract: {failures}"
        ) from error
    counts = [len(rows_in(frame, config.timestamp, p)) for p in plan.periods]
    if not any(counts):
        stamps = read_source(config)[config.timestamp]
        seen = f"{stamps.min()} to {stamps.max()}" if len(stamps) else "no rows at all"
        raise ReplayError(
            f"{config.name}: no row of the source lies in the replay {plan.periods[0].start}..{plan.periods[-1].end} "
            f"(the data spans {seen}): check replay.start and replay.end"
        )
    if frame[config.target].notna().sum() == 0:
        raise ReplayError(
            f"{config.name}: no row under the replay has a label ({config.target!r} is always null): "
            "there is nothing to measure any line on"
        )
    return ReplayData(frame=frame, period_rows=counts)


@task(cache_policy=NO_CACHE)
def replay_data(config: TrainingConfig, plan: ReplayPlan) -> ReplayData:
    """`load_replay_data`, logging the periods that hold no rows (they are reported as insufficient data)."""
    data = load_replay_data(config, plan)
    logger = get_run_logger()
    logger.info("replay of %d %s periods, %d rows under it", len(plan.periods), plan.period, len(data.frame))
    if empty := [p.label() for p, n in zip(plan.periods, data.period_rows, strict=True) if not n]:
        logger.warning("periods with no rows (reported as insufficient data): %s", ", ".join(empty))
    return data


@task(cache_policy=NO_CACHE)
def wait_for_triggered_training(
    config: TrainingConfig, event_id: str, emitted_at: datetime, timeout_minutes: int
) -> dict[str, Any]:
    """Find the training run the drift event's trigger created and wait for it to end.

    A run that does not end in time stops the replay with a TimeoutError: scoring the next period
    while it still trains would credit (or blame) the wrong champion.
    """
    logger = get_run_logger()
    reason = f"drift event {event_id}"
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(f"training/{config.name}")
        deadline = time.monotonic() + 60 * timeout_minutes
        run = None
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
                flow_run_filter=FlowRunFilter(expected_start_time=StartFilter(after_=emitted_at - LOOKBACK)),
            )
            run = next((r for r in runs if r.parameters.get("reason") == reason), None)
            if run is not None and run.state is not None and run.state.type.value in TERMINAL:
                break
            time.sleep(2)
        else:
            state = "never created" if run is None else f"still {run.state.type.value if run.state else 'unknown'}"
            name = "" if run is None else f" ({run.name})"
            raise TimeoutError(
                f"the training run started by {reason}{name} is {state} after {timeout_minutes} min "
                "(replay.training_timeout_minutes): the replay stops rather than score with the wrong champion"
            )
    assert run is not None
    assert run.state is not None
    started = run.start_time
    delay = (datetime.fromisoformat(started.isoformat()) - emitted_at).total_seconds() if started else None
    logger.info("triggered run %s: %s (started %.1fs after the event)", run.name, run.state.type.value, delay or -1)
    return {"flow_run": run.name, "state": run.state.type.value, "event_to_start_seconds": delay}


def decision_of(config: TrainingConfig, reason: str) -> tuple[bool | None, str]:
    """The recorded decision of the version trained for `reason` (promoted?, why)."""
    versions = mlflow.MlflowClient().search_model_versions(f"name='{config.model_name}'")
    mine = [v for v in versions if v.tags.get("driftloop.reason") == reason]
    if not mine:
        return None, "the triggered run registered no version"
    tags = mine[0].tags
    return tags.get("driftloop.decision") == "promoted", tags.get("driftloop.decision_reason", "")


def training_cpu_seconds(config: TrainingConfig, reason: str) -> float | None:
    """CPU seconds the training runs for `reason` spent tuning and fitting (None: none was measured)."""
    experiment = mlflow.get_experiment_by_name(config.model_name)
    if experiment is None:
        return None
    runs = mlflow.MlflowClient().search_runs(
        [experiment.experiment_id], filter_string=f"tags.`driftloop.reason` = '{reason}'"
    )
    spent = [r.data.metrics[CPU_METRIC] for r in runs if CPU_METRIC in r.data.metrics]
    return float(sum(spent)) if spent else None


@task(cache_policy=NO_CACHE)
def record_arrived_labels(config: TrainingConfig, window: TimeWindow, stores: Stores) -> int:
    """The labels of `window` arrive: landed and recorded in the inference log as the scoring flow does."""
    labels, batch_id = land_labels.fn(config=config, window=window, stores=stores)
    if labels.empty:
        get_run_logger().warning("no label arrived for %s", window.label())
        return 0
    record_labels.fn(config=config, labels=labels, batch_id=batch_id, stores=stores)
    return len(labels)


@task(cache_policy=NO_CACHE)
def backtest(
    config: TrainingConfig, plan: ReplayPlan, data: ReplayData, static_version: str, stores: Stores
) -> tuple[Baselines | None, list[float], list[str], list[float]]:
    """The baselines and the triangle (when drawn), and per period the loop's quality and champion(s).

    Where the champion changed at a period's start, also the replaced champion's quality on it.
    """
    log = InferenceLog(DataStore(stores.data_uri), config).read()
    loop, champions = [], []
    for period in plan.periods:
        scored = rows_in(log, config.timestamp, period)
        loop.append(period_quality(config, scored[config.target], scored[PREDICTION]) if len(scored) else math.nan)
        champions.append(",".join(sorted(set(scored["model_version"]))) if len(scored) else "-")
    replaced = [math.nan] * len(plan.periods)
    for index in range(1, len(plan.periods)):
        old, new = champions[index - 1], champions[index]
        if old != new and "," not in old + new and "-" not in (old, new):  # one champion each side
            rows = rows_in(data.frame, config.timestamp, plan.periods[index])
            replaced[index] = model_quality(load_version(config.model_name, old), config, rows)
    baselines = None
    drawn = set(config.replay.baselines if config.replay else [])
    if drawn & {"static", "always"}:
        params = get_version(config.model_name, static_version).best_params | config.model.params
        baselines = measure_baselines(
            config,
            data.frame,
            plan,
            load_version(config.model_name, static_version),
            params,
            config.monitoring.retrain_window_days,
        )
    return baselines, loop, champions, replaced


def summarise(
    config: TrainingConfig, rows: list[PeriodRow], baselines: Baselines | None, initial_cpu: float | None
) -> ReplaySummary:
    """Means over the periods every drawn line could be measured on, retrains, costs, the frontier, regret."""
    drawn = set(config.replay.baselines if config.replay else [])
    loop = np.array([r.loop for r in rows], dtype=float)
    counted = np.isfinite(loop)
    for name in ("static", "always"):
        if name in drawn:
            counted &= np.isfinite(np.array([getattr(r, name) for r in rows], dtype=float))
    frontier = None
    if baselines is not None and "frontier" in drawn:
        frontier = hindsight_frontier(baselines.quality, config.higher_is_better, also_count=counted)
        counted &= np.array(frontier.counted)

    def mean(values: list[float]) -> float:
        chosen = np.array(values, dtype=float)[counted]
        return float(chosen.mean()) if chosen.size else math.nan

    started = sum(r.retrain_started for r in rows)
    spent = [r.retrain_cpu_seconds for r in rows if r.retrain_cpu_seconds is not None]
    lines = [
        Line(
            "driftloop",
            mean([r.loop for r in rows]),
            started,
            sum(r.promoted is True for r in rows),
            round(sum(spent), 1) if spent else (0.0 if not started else None),
        )
    ]
    if baselines is not None and "static" in drawn:
        lines.append(Line("static", mean(baselines.static), 0, 0, 0.0))
    if baselines is not None and "always" in drawn:
        lines.append(
            Line("always", mean(baselines.always), baselines.refits, baselines.refits, baselines.fit_cpu_seconds)
        )
    notes = list(baselines.notes) if baselines else []
    if rows and rows[-1].retrain_started:
        notes.append(
            f"the retrain started after the last period ({rows[-1].period}) serves none of the replayed periods: "
            "the frontier is read at the loop's retrains and promotions before it"
        )
    return ReplaySummary(
        rows=rows,
        lines=lines,
        frontier=frontier,
        counted=[bool(c) for c in counted],
        recipe=baselines.recipe if baselines else "",
        notes=notes,
        initial_cpu_seconds=initial_cpu,
        serving_retrains=sum(r.retrain_started for r in rows[:-1]),
        serving_promotions=sum(r.promoted is True for r in rows[:-1]),
    )


def as_records(summary: ReplaySummary) -> list[dict[str, Any]]:
    """The period rows as plain records (NaN as None), for the table artifact and the CSV."""
    return [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(r).items()} for r in summary.rows
    ]
