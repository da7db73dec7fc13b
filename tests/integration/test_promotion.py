"""Promotion and rollback against a real MLflow registry (SQLite), without Prefect.

The guard is what these tests attack: a stale comparison must not promote, two deciders at once
must not both promote, and rollback must walk the alias chain back one step at a time.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tasks.gate import Check, GateReport
from tasks.promote import Decision, RollbackError, apply_decision, rollback
from tasks.registry import CHAMPION, PREVIOUS, TAG_DECISION, TAG_DECISION_REASON, TAG_REPLACED

NAME = "guarded-model"


def report(passed: bool, why: str = "improvement 0.0100 over champion") -> GateReport:
    return GateReport(
        metric="roc_auc",
        passed=passed,
        checks=[Check("beats champion", passed, why)],
        challenger_value=0.7,
        champion_value=0.69,
        champion_version=None,
    )


@pytest.fixture
def client(tmp_path: Path) -> MlflowClient:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    registry = MlflowClient(tracking_uri=uri, registry_uri=uri)
    registry.create_registered_model(NAME)
    for _ in range(4):
        registry.create_model_version(NAME, source=(tmp_path / "artifacts").as_uri())
    return registry


def aliases(client: MlflowClient) -> dict[str, str]:
    return {alias: str(version) for alias, version in client.get_registered_model(NAME).aliases.items()}


def test_first_promotion_sets_champion_only(client: MlflowClient, tmp_path: Path) -> None:
    decision = apply_decision(client, NAME, "1", report(True), compared_with=None, lock_dir=tmp_path)

    assert decision == Decision(NAME, "1", "promoted", decision.reason, None, "1")
    assert aliases(client) == {CHAMPION: "1"}
    assert client.get_model_version(NAME, "1").tags[TAG_DECISION] == "promoted"


def test_failed_gate_records_rejection_and_moves_nothing(client: MlflowClient, tmp_path: Path) -> None:
    apply_decision(client, NAME, "1", report(True), None, tmp_path)

    decision = apply_decision(client, NAME, "2", report(False, "improvement 0.0000"), "1", tmp_path)

    assert decision.outcome == "rejected"
    assert aliases(client) == {CHAMPION: "1"}
    tags = client.get_model_version(NAME, "2").tags
    assert tags[TAG_DECISION] == "rejected"
    assert "improvement 0.0000" in tags[TAG_DECISION_REASON]


def test_stale_comparison_is_superseded_not_promoted(client: MlflowClient, tmp_path: Path) -> None:
    apply_decision(client, NAME, "1", report(True), None, tmp_path)
    apply_decision(client, NAME, "2", report(True), "1", tmp_path)  # 2 beat 1 and is champion now

    late = apply_decision(client, NAME, "3", report(True), compared_with="1", lock_dir=tmp_path)

    assert late.outcome == "superseded"
    assert "changed from 1 to 2" in late.reason
    assert aliases(client) == {CHAMPION: "2", PREVIOUS: "1"}
    assert client.get_model_version(NAME, "3").tags[TAG_DECISION] == "superseded"


def test_concurrent_deciders_promote_at_most_once(client: MlflowClient, tmp_path: Path) -> None:
    """Four candidates that all beat 'no champion' race; the lock lets exactly one win."""
    apply_decision(client, NAME, "1", report(True), None, tmp_path)
    outcomes: dict[str, str] = {}
    start = threading.Barrier(3)

    def decide(version: str) -> None:
        start.wait()
        outcomes[version] = apply_decision(client, NAME, version, report(True), "1", tmp_path).outcome

    threads = [threading.Thread(target=decide, args=(v,)) for v in ("2", "3", "4")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(outcomes.values()) == ["promoted", "superseded", "superseded"]
    winner = next(v for v, outcome in outcomes.items() if outcome == "promoted")
    assert aliases(client) == {CHAMPION: winner, PREVIOUS: "1"}


def test_rollback_walks_the_chain_back(client: MlflowClient, tmp_path: Path) -> None:
    for version, compared in (("1", None), ("2", "1"), ("3", "2")):
        apply_decision(client, NAME, version, report(True), compared, tmp_path)
    assert client.get_model_version(NAME, "3").tags[TAG_REPLACED] == "2"

    first = rollback(client, NAME, "bad release 3", tmp_path)
    assert (first.champion_before, first.champion_after) == ("3", "2")
    assert aliases(client) == {CHAMPION: "2", PREVIOUS: "1"}
    assert client.get_model_version(NAME, "3").tags[TAG_DECISION] == "rolled_back"

    second = rollback(client, NAME, "bad release 2", tmp_path)
    assert second.champion_after == "1"
    assert aliases(client) == {CHAMPION: "1"}

    with pytest.raises(RollbackError, match="no 'previous-champion'"):
        rollback(client, NAME, "nothing left", tmp_path)
    assert aliases(client) == {CHAMPION: "1"}
