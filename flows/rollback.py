"""The rollback flow: put the previous champion back. Also a command: `python -m flows.rollback`."""

from __future__ import annotations

import argparse
import sys

from mlflow import MlflowClient
from prefect import flow, get_run_logger

from tasks.card import publish_champion_change
from tasks.history_store import audit_log
from tasks.promote import Decision, RollbackError, rollback
from tasks.registry import connect
from tasks.stores import Stores


@flow(name="rollback")
def rollback_flow(model_name: str, reason: str = "manual rollback") -> Decision:
    """Move `champion` back to `previous-champion`; the rolled-back version records why."""
    stores = Stores.from_env()
    connect(stores=stores, model_name=model_name)
    client = MlflowClient()
    audit = audit_log(stores.history, model_name)
    decision = rollback(client, model_name, reason, stores.promotion_locks, audit)
    publish_champion_change(client, audit, decision.champion_before, decision.champion_after)
    get_run_logger().info(
        "%s: champion %s -> %s (%s)", model_name, decision.champion_before, decision.champion_after, reason
    )
    return decision


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Roll the champion back to the previous champion.")
    parser.add_argument("--model", required=True, help="registered model name, e.g. flights-late-arrival")
    parser.add_argument("--reason", default="manual rollback", help="recorded on the rolled-back version")
    args = parser.parse_args(argv)
    try:
        decision = rollback_flow(model_name=args.model, reason=args.reason)
    except RollbackError as error:
        print(f"rollback refused: {error}", file=sys.stderr)
        return 1
    print(f"{args.model}: champion {decision.champion_before} -> {decision.champion_after}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
