"""The `driftloop` command (installed by the package).

`driftloop` is for what people do by hand; each subcommand reads or changes the stores directly,
so it works when the Prefect server is down (it still publishes to a configured server):

    driftloop status                      champion, last training runs, last drift check
    driftloop history [--verify]          the promotion history, oldest first
    driftloop card --version N            the model card of a version
    driftloop promote --version N         make N champion if it passes the gate (--force overrides, recorded)
    driftloop rollback                    the previous champion back
    driftloop validate FILE               the data contract on one batch, nothing stored
    driftloop replay --config FILE        backtest the config's dataset: the loop against its baselines
    driftloop migrate --from-home DIR     copy an embedded home into the stores the environment names

Exit status: 0 done, 1 refused (the gate, the contract, nothing to roll back, a broken history),
2 bad input (config, file, version), 3 a service unreachable. Failures print one line to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from flows.entry import (
    DEFAULT_CONFIG,
    EXIT_BAD_INPUT,
    EXIT_OK,
    EXIT_STOPPED,
    EXIT_UNAVAILABLE,
    load_or_report,
)
from tasks.settings import TrainingConfig

if TYPE_CHECKING:  # imported where used, so `driftloop --help` does not load MLflow
    from mlflow import MlflowClient

    from tasks.registry import VersionRef
    from tasks.stores import Stores


class CommandFailed(Exception):
    """A subcommand's one-line failure and its exit status."""

    def __init__(self, message: str, status: int = EXIT_STOPPED) -> None:
        super().__init__(message)
        self.status = status


# --- the subcommands ------------------------------------------------------------------------------


def _client(config: TrainingConfig) -> tuple[MlflowClient, Stores]:
    """An MLflow client on our stores; MLflow is imported here so `--help` stays fast."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per file read: noise
    import mlflow
    from mlflow import MlflowClient

    from tasks.services import bound_http_retries, use_wal
    from tasks.stores import Stores

    stores = Stores.from_env()
    use_wal(stores.mlflow_tracking_uri)
    bound_http_retries()
    mlflow.set_tracking_uri(stores.mlflow_tracking_uri)
    mlflow.set_registry_uri(stores.mlflow_tracking_uri)
    return MlflowClient(), stores


def _version(client: MlflowClient, config: TrainingConfig, version: str) -> VersionRef:
    from mlflow.exceptions import MlflowException

    from tasks.registry import get_version

    try:
        return get_version(config.model_name, version, client)
    except MlflowException as error:
        if error.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
            raise CommandFailed(f"{config.model_name} has no version {version!r}", EXIT_BAD_INPUT) from error
        raise


def status(config: TrainingConfig, args: argparse.Namespace) -> int:
    from tasks.history_store import audit_log
    from tasks.registry_view import open_view
    from tasks.status import model_status
    from tasks.stores import Stores

    stores = Stores.from_env()  # the embedded store is read without MLflow (tasks/registry_view.py)
    view = open_view(stores.mlflow_tracking_uri, lambda: _client(config)[0])
    print(model_status(view, config, audit_log(stores.history, config.model_name), runs=args.runs))
    return EXIT_OK


def history(config: TrainingConfig, args: argparse.Namespace) -> int:
    from tasks.history_store import audit_log
    from tasks.stores import Stores

    log = audit_log(Stores.from_env().history, config.model_name)
    entries = log.entries()
    if args.json:
        print(json.dumps([asdict(entry) for entry in entries], indent=2))
    elif not entries:
        print(f"{config.model_name}: no decisions recorded yet ({log.where})")
    else:
        print(f"{config.model_name}: {len(entries)} decisions ({log.where}), oldest first")
        for entry in entries:
            print(entry.describe())
            if (violations := entry.gate_line()) is not None:
                print(f"    gate: {violations}")
    if args.verify:
        problems = log.verify()
        if problems:
            raise CommandFailed(f"the history is not intact: {problems[0]} ({len(problems)} problem(s))")
        print(f"verified: {len(entries)} entries, the hash chain is intact", file=sys.stderr)
    return EXIT_OK


def card(config: TrainingConfig, args: argparse.Namespace) -> int:
    from tasks.card import NoSuchVersion, gather_facts, render_card
    from tasks.registry_view import open_view
    from tasks.stores import Stores

    stores = Stores.from_env()  # the embedded store is read without MLflow (tasks/registry_view.py)
    view = open_view(stores.mlflow_tracking_uri, lambda: _client(config)[0])
    try:
        facts = gather_facts(view, config.model_name, args.version, stores.history)
    except NoSuchVersion as error:
        raise CommandFailed(str(error), EXIT_BAD_INPUT) from error
    text = render_card(facts)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"model card of {config.model_name} version {facts.version} written to {args.output}")
    else:
        print(text)
    return EXIT_OK


def promote(config: TrainingConfig, args: argparse.Namespace) -> int:
    from tasks.audit import publish_history
    from tasks.card import publish_champion_change
    from tasks.evaluate import HoldoutUnavailable, judge_version
    from tasks.history_store import audit_log
    from tasks.promote import ManualPromotionError, promote_version
    from tasks.registry import champion
    from tasks.stores import DataStore

    client, stores = _client(config)
    version = _version(client, config, args.version)
    current = champion(config.model_name, client)
    if current is not None and current.version == version.version:
        raise CommandFailed(f"{config.model_name}: version {version.version} is already the champion")
    report = None
    try:
        report, rows = judge_version(config, DataStore(stores.data_uri), version, current)
        print(f"gate on {rows} holdout rows: {'passed' if report.passed else 'rejected'}: {report.reason}")
    except HoldoutUnavailable as error:
        if not args.force:
            raise CommandFailed(
                f"cannot judge version {version.version}: {error}; --force promotes unjudged"
            ) from error
        print(f"not judged ({error}); promoting because of --force", file=sys.stderr)
    audit = audit_log(stores.history, config.model_name)
    try:
        decision = promote_version(
            client,
            config.model_name,
            version.version,
            report,
            args.reason,
            stores.promotion_locks,
            audit,
            force=args.force,
        )
    except ManualPromotionError as error:
        publish_history(client, audit)
        raise CommandFailed(f"promotion refused: {error}") from error
    publish_champion_change(client, audit, decision.champion_before, decision.champion_after)
    print(f"{config.model_name}: champion {decision.champion_before or 'none'} -> {decision.champion_after}")
    return EXIT_OK


def rollback(config: TrainingConfig, args: argparse.Namespace) -> int:
    from tasks.card import publish_champion_change
    from tasks.history_store import audit_log
    from tasks.promote import RollbackError
    from tasks.promote import rollback as roll_back

    client, stores = _client(config)
    audit = audit_log(stores.history, config.model_name)
    try:
        decision = roll_back(client, config.model_name, args.reason, stores.promotion_locks, audit)
    except RollbackError as error:
        raise CommandFailed(f"rollback refused: {error}") from error
    publish_champion_change(client, audit, decision.champion_before, decision.champion_after)
    print(f"{config.model_name}: champion {decision.champion_before} -> {decision.champion_after} ({args.reason})")
    return EXIT_OK


def validate(config: TrainingConfig, args: argparse.Namespace) -> int:
    from tasks.ingest import BatchReadError, parse_batch
    from tasks.validate import check_frame

    path = Path(args.file)
    if not path.is_file():
        raise CommandFailed(f"{path}: no such file", EXIT_BAD_INPUT)
    try:
        frame = parse_batch(path.name, path.read_bytes())
    except BatchReadError as error:
        raise CommandFailed(str(error)) from error
    _, failures = check_frame(config, frame, str(path), require_target=not args.unlabelled)
    if failures:
        for failure in failures[1:]:
            print(failure.describe(), file=sys.stderr)
        raise CommandFailed(f"{len(failures)} rule(s) failed; first: {failures[0].describe()}")
    print(f"{path}: valid: {len(frame)} rows pass the schema and the suite of {config.name}")
    return EXIT_OK


def replay(config: TrainingConfig, args: argparse.Namespace) -> int:
    from flows.replay import run  # the whole stack: only this command pays for it

    return run(args.config, args.periods)


def migrate(config: TrainingConfig, args: argparse.Namespace) -> int:
    from tasks.migrate import MigrationError, migrate
    from tasks.stores import Stores

    source = Stores.from_env({"DRIFTLOOP_HOME": args.from_home})  # every store at its embedded default
    if not (source.home / "mlflow" / "mlflow.db").exists():
        raise CommandFailed(f"{source.home} holds no embedded MLflow store (mlflow/mlflow.db)", EXIT_BAD_INPUT)
    _client(config)  # the target's MLflow settings (retries), as every command
    try:
        done = migrate(source, Stores.from_env())
    except MigrationError as error:
        raise CommandFailed(str(error)) from error
    print(done.summary())
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="driftloop",
        description="Inspect and steer driftloop by hand: the champion, its history, its card, promotions.",
        epilog="Exit status: 0 done, 1 refused, 2 bad input, 3 a service unreachable. "
        "Stores: DRIFTLOOP_HOME (default ./.driftloop) and the DRIFTLOOP_* overrides in the README.",
    )
    parser.add_argument("--config", default=DEFAULT_CONFIG, help=f"dataset config (default {DEFAULT_CONFIG})")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    add = commands.add_parser("status", help="the champion, the last training runs and the last drift check")
    add.add_argument("--runs", type=int, default=5, help="how many recent training runs to list (default 5)")
    add.set_defaults(handler=status)

    add = commands.add_parser("history", help="every promotion decision, oldest first (append-only)")
    add.add_argument("--json", action="store_true", help="the entries as JSON")
    add.add_argument("--verify", action="store_true", help="check the hash chain; exit 1 if a line was changed")
    add.set_defaults(handler=history)

    add = commands.add_parser("card", help="the model card of a version, generated from the registry")
    add.add_argument("--version", required=True, help="registered version number")
    add.add_argument("--output", help="write the card to this file instead of printing it")
    add.set_defaults(handler=card)

    add = commands.add_parser("promote", help="make a version champion if it passes the gate")
    add.add_argument("--version", required=True, help="registered version number")
    add.add_argument("--force", action="store_true", help="promote even if the gate rejects it (recorded)")
    add.add_argument("--reason", default="manual promotion", help="recorded in the history")
    add.set_defaults(handler=promote)

    add = commands.add_parser("rollback", help="make the previous champion the champion again")
    add.add_argument("--reason", default="manual rollback", help="recorded in the history")
    add.set_defaults(handler=rollback)

    add = commands.add_parser("validate", help="check one batch file against the data contract; nothing stored")
    add.add_argument("file", help="a .csv or .parquet batch")
    add.add_argument("--unlabelled", action="store_true", help="a batch to score: no target column required")
    add.set_defaults(handler=validate)

    add = commands.add_parser(
        "migrate", help="copy an embedded home (registry, aliases, history, studies, data) to the server shape"
    )
    add.add_argument("--from-home", required=True, help="the embedded DRIFTLOOP_HOME to copy from (only read)")
    add.set_defaults(handler=migrate)

    add = commands.add_parser(
        "replay", help="backtest: replay the config's replay: periods through the loop on a local Prefect server"
    )
    add.add_argument("--config", default=argparse.SUPPRESS, help="dataset config with a replay: section")
    add.add_argument("--periods", type=int, help="replay only the first N periods")
    add.set_defaults(handler=replay)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = load_or_report(args.config)
    if config is None:
        return EXIT_BAD_INPUT
    handler: Callable[[TrainingConfig, argparse.Namespace], int] = args.handler
    try:
        return handler(config, args)
    except CommandFailed as failure:
        print(f"driftloop {args.command}: {failure}", file=sys.stderr)
        return failure.status
    except Exception as error:
        from tasks.services import unavailable
        from tasks.stores import Stores

        if (down := unavailable(error, Stores.from_env().mlflow_tracking_uri)) is None:
            raise
        print(f"driftloop {args.command}: {down}", file=sys.stderr)
        return EXIT_UNAVAILABLE


if __name__ == "__main__":
    sys.exit(main())
