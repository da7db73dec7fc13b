"""The training flow: landed data to a gated champion. Wiring only; each stage is a task module."""

from __future__ import annotations

import logging
import sys

from prefect import flow
from prefect.events.worker import EventsWorker
from prefect.logging.handlers import APILogWorker
from pydantic import ValidationError

from flows.entry import EXIT_BAD_INPUT, EXIT_STOPPED, EXIT_UNAVAILABLE, load_or_report, parser_with_config
from tasks.evaluate import evaluate, rejudge_against
from tasks.explain import explain
from tasks.gate import gate
from tasks.ingest import BatchReadError, ingest
from tasks.lineage import prepare
from tasks.promote import Decision, find_earlier_decision, model_card, promote
from tasks.recovery import flow_run_lease, recover
from tasks.registry import connect, find_champion
from tasks.services import unavailable
from tasks.settings import TimeWindow, TrainingConfig
from tasks.split import SplitError, split
from tasks.stores import Stores
from tasks.train import refit, train
from tasks.tuning import tune
from tasks.validate import BatchRejected, validate


@flow(name="training")
def training(config: TrainingConfig, window: TimeWindow | None = None, reason: str = "manual") -> Decision:
    """Ingest, validate, split, tune, train, evaluate against the champion, explain, gate, (refit,) promote.

    Every decision is appended to the promotion history, and the version's model card is
    published to MLflow and the Prefect UI.

    `window` overrides the config's training window; `reason` says why the run happened
    (manual, schedule, or the id of the drift event that triggered it) and is recorded.
    A rerun on the same data, config and code returns the first run's decision.
    """
    stores = Stores.from_env()
    window = window or config.window
    connect(stores=stores, model_name=config.model_name)
    recover(stores=stores)
    with flow_run_lease(stores, config.model_name):
        batches = ingest(config=config, window=window, stores=stores)
        frame = validate(config=config, batches=batches, window=window, stores=stores)
        context = prepare(config=config, window=window, reason=reason, batches=batches)
        earlier = find_earlier_decision(model_name=config.model_name, idempotency_key=context.idempotency_key)
        if earlier is not None:
            return earlier
        splits = split(config=config, frame=frame)
        incumbent = find_champion(model_name=config.model_name)
        tuning = tune(
            config=config,
            splits=splits,
            stores=stores,
            study_name=f"{config.model_name}-{context.study_name}",
            champion_params=incumbent.best_params if incumbent else None,
        )
        candidate = train(config=config, splits=splits, tuning=tuning, batches=batches, context=context, stores=stores)
        evaluation = evaluate(
            config=config, splits=splits, window=window, candidate=candidate, champion=incumbent, stores=stores
        )
        explain(config=config, holdout=splits.holdout, candidate=candidate)
        report = gate(config=config, evaluation=evaluation, candidate=candidate)
        served = refit(config=config, splits=splits, candidate=candidate, passed=report.passed, window=window)
        decision = promote(
            candidate=served,
            report=report,
            compared_with=evaluation.champion_version,
            stores=stores,
            # a concurrent promotion is met by the judged model, never by the refit (it saw the holdout)
            rejudge=rejudge_against(config=config, splits=splits, window=window, candidate=candidate, stores=stores),
        )
        model_card(decision=decision, stores=stores)
        return decision


def quiet_prefect_shutdown() -> None:
    """Flush Prefect's log and event workers now, silently, so our one line is the last one.

    With the API down, the log worker would print "Error logging to API" after it at exit.
    """
    logging.raiseExceptions = False  # the worker only prints its error when this is true
    APILogWorker.drain_all(timeout=10)
    EventsWorker.drain_all(timeout=10)


def main(argv: list[str] | None = None) -> int:
    parser = parser_with_config("Run the training flow once, in this process.")
    parser.add_argument("--reason", default="manual", help="why this run happens; recorded on the model")
    parser.add_argument("--start", help="window start (YYYY-MM-DD); default: the config's window")
    parser.add_argument("--end", help="window end, exclusive (YYYY-MM-DD)")
    args = parser.parse_args(argv)
    config = load_or_report(args.config)
    if config is None:
        return EXIT_BAD_INPUT
    try:
        window = None
        if args.start or args.end:
            window = TimeWindow(start=args.start or config.window.start, end=args.end or config.window.end)
    except ValidationError as error:
        print(error, file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        decision = training(config=config, window=window, reason=args.reason)
    except (BatchRejected, BatchReadError, SplitError) as error:
        print(f"training stopped: {error}", file=sys.stderr)
        return EXIT_STOPPED
    except Exception as error:
        if (down := unavailable(error, Stores.from_env().mlflow_tracking_uri)) is None:
            raise
        quiet_prefect_shutdown()
        print(f"training stopped: {down}; nothing was promoted. Rerun when it is back.", file=sys.stderr)
        return EXIT_UNAVAILABLE
    print(f"{decision.model_name} version {decision.version}: {decision.outcome} - {decision.reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
