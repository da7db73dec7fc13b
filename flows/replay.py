"""The replay: `make run`. 2013 through the whole loop, on a real local Prefect server.

Train on January-February, then month by month: score the month with the champion, record its
labels when the month ends, check drift; when the policy says so, the monitoring flow emits
`driftloop.drift.detected` and the served training deployment's trigger retrains (gated, as
always) before the next month is scored. At the end: a table and a plot of quality over time
for the loop, a static model and retraining every month, as files and Prefect artifacts.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.cli import EXIT_BAD_INPUT, load_or_report, parser_with_config
from flows.local_stack import local_stack
from flows.monitoring import monitoring
from flows.scoring import scoring
from flows.training import training
from tasks.replay import PeriodRow, baselines, decision_of, monthly_periods, publish_replay, wait_for_triggered_training
from tasks.settings import TrainingConfig
from tasks.stores import Stores


@flow(name="replay")
def replay(config: TrainingConfig, year: int = 2013, first_month: int = 3, last_month: int = 12) -> list[PeriodRow]:
    """Replay `year` from `first_month` on, after an initial training run on the config's window."""
    started = time.monotonic()
    logger = get_run_logger()
    stores = Stores.from_env()
    first = training(config=config, reason="replay: initial training")
    logger.info("initial champion: version %s (%s)", first.version, first.outcome)
    if first.version is None:
        raise RuntimeError(f"the initial training registered no version: {first.reason}")
    periods = monthly_periods(year, first_month, last_month)
    drift: dict[str, tuple[str, float, bool, bool | None, str, float | None]] = {}
    for index, period in enumerate(periods, start=1):
        scoring(config=config, window=period, labels_window=period)
        outcome = monitoring(config=config, as_of=datetime.combine(period.end, datetime.min.time(), tzinfo=UTC))
        share = outcome.result.drifted_share if outcome.result else float("nan")
        promoted, why, delay = None, "; ".join(outcome.decision.reasons), None
        if outcome.event_id and outcome.event_at:
            run = wait_for_triggered_training(config=config, event_id=outcome.event_id, emitted_at=outcome.event_at)
            promoted, why = decision_of(config, f"drift event {outcome.event_id}")
            delay = run["event_to_start_seconds"]
        drift[period.label()] = (outcome.status, share, bool(outcome.event_id), promoted, why, delay)
        logger.info(
            "[%d/%d] %s: %s, retrain %s%s", index, len(periods), period.label(), outcome.status,
            "started" if outcome.event_id else "not started",
            "" if promoted is None else f", {'promoted' if promoted else 'rejected'}",
        )  # fmt: skip
    quality = baselines(config=config, periods=periods, static_version=first.version, stores=stores)
    rows = [
        PeriodRow(
            period=label,
            champion_version=str(quality[label]["champion_version"]),
            rows=int(quality[label]["rows"]),
            loop=quality[label]["loop"],
            static=quality[label]["static"],
            always=quality[label]["always"],
            drift=status,
            drift_share=share,
            retrain_started=started_retrain,
            promoted=promoted,
            why=why,
            event_to_start_seconds=delay,
        )
        for label, (status, share, started_retrain, promoted, why, delay) in drift.items()
    ]
    publish_replay(config=config, rows=rows, stores=stores, seconds=time.monotonic() - started)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = parser_with_config("Replay 2013 through driftloop on a local Prefect server.")
    parser.add_argument("--last-month", type=int, default=12, help="stop after this month (3-12)")
    args = parser.parse_args(argv)
    config = load_or_report(args.config)
    if config is None:
        return EXIT_BAD_INPUT
    stores = Stores.from_env()
    began = time.monotonic()
    print(f"starting a local Prefect server and serving the deployments (logs: {stores.home / 'run'})")
    with local_stack(stores.home, [Path(args.config)]) as stack:
        print(f"Prefect UI: {stack.api_url.removesuffix('/api')} (open while the replay runs)")
        with temporary_settings(updates={PREFECT_API_URL: stack.api_url}):
            rows = replay(config=config, last_month=args.last_month)
    summary = (stores.home / "replay" / "summary.md").read_text()
    print(summary)
    print(f"replay finished in {time.monotonic() - began:.0f} s; {len(rows)} months; files in {stores.home / 'replay'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
