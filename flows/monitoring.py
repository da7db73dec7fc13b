"""The monitoring flow: is production data drifting away from what the champion learned?

Scheduled by cron (flows/deployments.py). When the drift policy says retrain, it emits
`driftloop.drift.detected`; the training deployment's trigger starts the retraining.
"""

from __future__ import annotations

import dataclasses
import sys
from datetime import UTC, date, datetime

from prefect import flow, get_run_logger

from flows.entry import EXIT_BAD_INPUT, load_or_report, parser_with_config
from tasks.drift_policy import DriftDecision
from tasks.monitor import MonitoringOutcome, check_bounds, check_drift, load_reference, raise_alert, recent_window
from tasks.recovery import flow_run_lease
from tasks.registry import connect, find_champion
from tasks.settings import TrainingConfig
from tasks.stores import Stores


@flow(name="monitoring")
def monitoring(
    config: TrainingConfig, as_of: datetime | None = None, labelled_until: date | None = None
) -> MonitoringOutcome:
    """Check the last `monitoring.window_days` of the inference log against the champion's reference.

    `as_of` is the end of the checked window (default: now); the replay passes simulated time.
    `labelled_until` is the day up to which labels have arrived (default: `as_of`): a retrain the
    alert requests trains on the trailing labelled window ending there.
    """
    stores = Stores.from_env()
    as_of = (as_of or datetime.now(UTC)).astimezone(UTC)
    connect(stores=stores, model_name=config.model_name)
    champion = find_champion(model_name=config.model_name)
    if champion is None:
        reason = "no champion yet: nothing to monitor"
        get_run_logger().warning(reason)
        decision = DriftDecision(status="insufficient_data", retrain=False, reasons=[reason])
        window = check_bounds(as_of, config.monitoring.window_days)[2]
        return MonitoringOutcome(config.model_name, None, window, as_of, decision, None, None)
    with flow_run_lease(stores, config.model_name):  # a killed check's MLflow run is ended by reconciliation
        reference = load_reference(config=config, champion=champion)
        current, window = recent_window(config=config, stores=stores, as_of=as_of)
        outcome = check_drift(
            config=config, reference=reference, current=current, window=window, as_of=as_of, stores=stores
        )
    if not outcome.decision.retrain:
        return outcome
    emitted = raise_alert(config=config, outcome=outcome, stores=stores, labelled_until=labelled_until)
    if emitted is None:
        return outcome
    event_id, event_at = emitted
    return dataclasses.replace(outcome, event_id=event_id, event_at=event_at)


def parse_as_of(text: str) -> datetime:
    """An ISO date or time: naive is UTC; an explicit offset is converted (+05:00 is five hours before UTC)."""
    moment = datetime.fromisoformat(text)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def main(argv: list[str] | None = None) -> int:
    parser = parser_with_config("Run one drift check now, in this process.")
    parser.add_argument("--as-of", help="end of the checked window (ISO date/time; UTC unless it says); default now")
    args = parser.parse_args(argv)
    config = load_or_report(args.config)
    if config is None:
        return EXIT_BAD_INPUT
    as_of = parse_as_of(args.as_of) if args.as_of else None
    outcome = monitoring(config=config, as_of=as_of)
    print(f"{config.model_name} {outcome.window.label()}: {outcome.status} - {'; '.join(outcome.decision.reasons)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
