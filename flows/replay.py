"""The replay (`make run`, `driftloop replay --config FILE`): any dataset's past through the whole loop.

On a real local Prefect server: train on the initial window, then period after period (the config's
`replay:` section): score the period with the champion, let the labels that are due arrive, check
drift; when the policy says so, the monitoring flow emits `driftloop.drift.detected` and the served
training deployment's trigger retrains (gated, as always) before the next period is scored. At the
end, beside the loop: a static model, retraining every period, and the hindsight frontier, each with
its quality and its training cost, as files and Prefect artifacts.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.events.worker import EventsWorker
from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.entry import EXIT_BAD_INPUT, EXIT_STOPPED, load_or_report, parser_with_config
from flows.local_stack import local_stack
from flows.monitoring import monitoring
from flows.scoring import scoring
from flows.training import training
from tasks.backtest import ReplayError, ReplayPlan
from tasks.ingest import BatchReadError
from tasks.lineage import git_revision
from tasks.replay import (
    PeriodRow,
    ReplaySummary,
    backtest,
    decision_of,
    load_replay_data,
    record_arrived_labels,
    replay_data,
    summarise,
    training_cpu_seconds,
    wait_for_triggered_training,
)
from tasks.replay_report import publish_replay
from tasks.settings import TrainingConfig
from tasks.stages import STAGES_FILE, Stopwatch, totals_markdown
from tasks.stores import Stores

INITIAL_REASON = "replay: initial training"


@flow(name="replay")
def replay(config: TrainingConfig, periods: int | None = None) -> ReplaySummary:
    """Replay the config's `replay:` periods (the first `periods` of them, when given)."""
    started = time.monotonic()
    watch = Stopwatch()
    logger = get_run_logger()
    stores = Stores.from_env()
    if config.replay is None:
        raise ReplayError(f"{config.name}: the config has no replay: section to replay")
    plan = ReplayPlan.from_config(config.replay, limit=periods)
    with watch.timed("loading and validating the replay's data"):
        data = replay_data(config=config, plan=plan)
    with watch.timed("initial training"):
        first = training(config=config, window=config.initial_window, reason=INITIAL_REASON)
    logger.info("initial champion: version %s (%s)", first.version, first.outcome)
    if first.version is None:
        raise RuntimeError(f"the initial training registered no version: {first.reason}")
    rows: list[PeriodRow] = []
    for index, period in enumerate(plan.periods):
        if data.period_rows[index]:
            with watch.timed("scoring", f"scoring {period.label()}"):
                scoring(config=config, window=period)
        if (arrived := plan.labels_arriving(index)) is not None:
            with watch.timed("labels arriving", f"labels {arrived.label()}"):
                record_arrived_labels(config=config, window=arrived, stores=stores)
        with watch.timed("monitoring", f"monitoring {period.label()}"):
            outcome = monitoring(
                config=config,
                as_of=datetime.combine(period.end, datetime.min.time(), tzinfo=UTC),
                labelled_until=plan.labelled_until(index + 1),
            )
        row = PeriodRow(
            period=period.label(), champion_version="-", rows=data.period_rows[index], loop=float("nan"),
            static=float("nan"), always=float("nan"), drift=outcome.status,
            drift_share=outcome.result.drifted_share if outcome.result else float("nan"),
            retrain_started=bool(outcome.event_id), promoted=None,
            why="no rows in this period" if not data.period_rows[index] else "; ".join(outcome.decision.reasons),
            event_to_start_seconds=None, signals=", ".join(outcome.decision.fired) or "-",
        )  # fmt: skip
        if outcome.event_id and outcome.event_at:
            reason = f"drift event {outcome.event_id}"
            with watch.timed("triggered training (event to its end)", f"retraining after {period.label()}"):
                run = wait_for_triggered_training(
                    config=config,
                    event_id=outcome.event_id,
                    emitted_at=outcome.event_at,
                    timeout_minutes=config.replay.training_timeout_minutes,
                )
            row.promoted, row.why = decision_of(config, reason)
            if run["state"] != "COMPLETED":
                row.why = f"the triggered run ended {run['state']}; the champion stays. {row.why}"
            row.event_to_start_seconds = run["event_to_start_seconds"]
            row.retrain_cpu_seconds = training_cpu_seconds(config, reason)
        rows.append(row)
        logger.info(
            "[%d/%d] %s: %s, retrain %s%s", index + 1, len(plan.periods), period.label(), outcome.status,
            "started" if outcome.event_id else "not started",
            "" if row.promoted is None else f", {'promoted' if row.promoted else 'rejected'}",
        )  # fmt: skip
    for window in plan.labels_never_arrived():  # after the replay, so the loop can be measured on them too
        record_arrived_labels(config=config, window=window, stores=stores)
    with watch.timed("baselines and the loop's scores (static, always, frontier)"):
        baselines, loop, champions, replaced = backtest(
            config=config, plan=plan, data=data, static_version=first.version, stores=stores
        )
    for index, row in enumerate(rows):
        row.loop, row.champion_version, row.replaced = loop[index], champions[index], replaced[index]
        if baselines is not None:
            row.static, row.always = baselines.static[index], baselines.always[index]
    summary = summarise(config, rows, baselines, training_cpu_seconds(config, INITIAL_REASON))
    with watch.timed("report and plots"):
        publish_replay(config=config, summary=summary, stores=stores, seconds=time.monotonic() - started)
    return dataclasses.replace(summary, stopwatch=watch)


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--periods", type=int, help="replay only the first N periods of the config's replay")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = add_arguments(parser_with_config("Replay a dataset's past through driftloop on a local Prefect server."))
    args = parser.parse_args(argv)
    return run(args.config, args.periods)


def run(config_path: str, periods: int | None) -> int:
    """Start a local server and the served deployments, replay, print the summary."""
    config = load_or_report(config_path)
    if config is None:
        return EXIT_BAD_INPUT
    if config.replay is None:
        print(f"{config_path}: no replay: section; add one (README: the backtest) to replay it", file=sys.stderr)
        return EXIT_BAD_INPUT
    if periods is not None and periods < 1:
        print(f"--periods {periods}: replay at least one period", file=sys.stderr)
        return EXIT_BAD_INPUT
    stores = Stores.from_env()
    began = time.monotonic()
    try:
        load_replay_data(config, ReplayPlan.from_config(config.replay, limit=periods))  # fail before any server
    except (ReplayError, BatchReadError) as error:
        print(f"replay stopped: {error}", file=sys.stderr)
        return EXIT_STOPPED
    print(f"starting a local Prefect server and serving the deployments (logs: {stores.home / 'run'})")
    outer = Stopwatch()
    try:
        stack_started = time.monotonic()
        with local_stack(stores.home, [Path(config_path)], schedules=False) as stack:
            outer.add("server start and serving the deployments", time.monotonic() - stack_started)
            print(f"Prefect UI: {stack.api_url.removesuffix('/api')} (open while the replay runs)")
            with temporary_settings(updates={PREFECT_API_URL: stack.api_url}):
                with outer.timed("the replay flow"):
                    summary = replay(config=config, periods=periods)
                # the last logs and events go while the server is up: at exit they would retry a stopped one
                APILogWorker.drain_all(timeout=30)
                EventsWorker.drain_all(timeout=30)
            stack_stopped = time.monotonic()
        outer.add("server stop", time.monotonic() - stack_stopped)
    except (ReplayError, BatchReadError) as error:
        print(f"replay stopped: {error}", file=sys.stderr)
        return EXIT_STOPPED
    folder = stores.home / "replay" / config.name
    whole = time.monotonic() - began
    watch = Stopwatch([*outer.stages[:1], *summary.stopwatch.stages, *outer.stages[2:]])
    watch.write(folder, config=config_path, commit=git_revision(), finished_at=datetime.now(UTC).isoformat(),
                seconds=f"{whole:.1f}", flow_seconds=f"{outer.stages[1].seconds:.1f}")  # fmt: skip
    print((folder / "summary.md").read_text())
    print(f"Where the {whole:.0f} s went ({folder / STAGES_FILE}):\n")
    print(totals_markdown(watch, whole))
    print(f"replay finished in {whole:.0f} s; {len(summary.rows)} period(s); files in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
