"""Promotion and rollback against a real MLflow registry (SQLite), without Prefect.

The guard is what these tests attack: a stale comparison must not promote, two deciders at once
must not both promote, the same key never registers twice, and rollback must walk the alias
chain back one step at a time. Candidates are real logged models (tests/candidates.py); the
promotion step registers them, so version numbers follow the order of decisions.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tasks.gate import Check, GateReport
from tasks.promote import Decision, RollbackError, apply_decision, earlier_decision, rollback
from tasks.registry import CHAMPION, PREVIOUS, TAG_DECISION, TAG_DECISION_REASON, TAG_REPLACED
from tasks.train import Candidate
from tests.candidates import logged_candidate, registry_of_its_own

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
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    """A registry of this test's own; MLflow's global URIs point at it and come back after."""
    return registry_of_its_own(tmp_path, monkeypatch, "promotion")


@pytest.fixture
def candidates(client: MlflowClient) -> list[Candidate]:
    return [logged_candidate(NAME) for _ in range(4)]


def aliases(client: MlflowClient) -> dict[str, str]:
    return {alias: str(version) for alias, version in client.get_registered_model(NAME).aliases.items()}


def test_first_promotion_sets_champion_only(client: MlflowClient, candidates, tmp_path: Path) -> None:
    decision = apply_decision(client, candidates[0], report(True), compared_with=None, locks=tmp_path)

    assert decision == Decision(NAME, "1", "promoted", decision.reason, None, "1")
    assert aliases(client) == {CHAMPION: "1"}
    assert client.get_model_version(NAME, "1").tags[TAG_DECISION] == "promoted"


def test_failed_gate_records_rejection_and_moves_nothing(client: MlflowClient, candidates, tmp_path: Path) -> None:
    apply_decision(client, candidates[0], report(True), None, tmp_path)

    decision = apply_decision(client, candidates[1], report(False, "improvement 0.0000"), "1", tmp_path)

    assert decision.outcome == "rejected"
    assert aliases(client) == {CHAMPION: "1"}
    tags = client.get_model_version(NAME, "2").tags
    assert tags[TAG_DECISION] == "rejected"
    assert "improvement 0.0000" in tags[TAG_DECISION_REASON]


def test_stale_comparison_is_superseded_not_promoted(client: MlflowClient, candidates, tmp_path: Path) -> None:
    apply_decision(client, candidates[0], report(True), None, tmp_path)
    apply_decision(client, candidates[1], report(True), "1", tmp_path)  # 2 beat 1 and is champion now

    late = apply_decision(client, candidates[2], report(True), compared_with="1", locks=tmp_path)

    assert late.outcome == "superseded"
    assert "changed from 1 to 2" in late.reason
    assert aliases(client) == {CHAMPION: "2", PREVIOUS: "1"}
    assert client.get_model_version(NAME, "3").tags[TAG_DECISION] == "superseded"


def test_concurrent_deciders_promote_at_most_once(client: MlflowClient, candidates, tmp_path: Path) -> None:
    """Three candidates that all beat champion 1 race; the lock lets exactly one win."""
    apply_decision(client, candidates[0], report(True), None, tmp_path)
    outcomes: dict[str, str] = {}
    start = threading.Barrier(3)

    def decide(candidate: Candidate) -> None:
        start.wait()
        decision = apply_decision(client, candidate, report(True), "1", tmp_path)
        outcomes[str(decision.version)] = decision.outcome

    threads = [threading.Thread(target=decide, args=(c,)) for c in candidates[1:]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(outcomes.values()) == ["promoted", "superseded", "superseded"]
    winner = next(v for v, outcome in outcomes.items() if outcome == "promoted")
    assert aliases(client) == {CHAMPION: winner, PREVIOUS: "1"}


def test_rollback_walks_the_chain_back(client: MlflowClient, candidates, tmp_path: Path) -> None:
    for candidate, compared in zip(candidates, (None, "1", "2"), strict=False):
        apply_decision(client, candidate, report(True), compared, tmp_path)
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


def test_a_second_candidate_with_the_same_key_is_never_registered(client: MlflowClient, tmp_path: Path) -> None:
    """Two runs on the same data, config and code: the second to decide registers nothing."""
    first, twin = logged_candidate(NAME, key="same-key"), logged_candidate(NAME, key="same-key")
    apply_decision(client, first, report(True), None, tmp_path)

    decision = apply_decision(client, twin, report(True), None, tmp_path)

    assert (decision.outcome, decision.version) == ("superseded", None)
    assert "version 1 was registered from the same data, config and code" in decision.reason
    assert [v.version for v in client.search_model_versions(f"name = '{NAME}'")] == [1]
    assert client.get_run(twin.run_id).data.tags[TAG_DECISION] == "superseded"


def test_an_earlier_decision_holds_only_against_the_champion_it_was_judged_against(
    client: MlflowClient, candidates, tmp_path: Path
) -> None:
    """Rejected against version 2; version 2 rolled back to 1: the same data must be judged again."""
    apply_decision(client, candidates[0], report(True), None, tmp_path)
    apply_decision(client, candidates[1], report(True), "1", tmp_path)  # champion 2
    loser = logged_candidate(NAME, key="retrained-key")
    rejected = apply_decision(client, loser, report(False, "improvement -0.0100"), "2", tmp_path)
    assert rejected.outcome == "rejected"

    held = earlier_decision(client, NAME, "retrained-key")  # the champion is still 2: nothing new to train
    assert held is not None
    assert (held.version, held.outcome, held.reused) == (rejected.version, "rejected", True)
    assert "judged against the same champion" in held.reason

    rollback(client, NAME, "bad release 2", tmp_path)  # champion 1 now: the rejection said nothing of it
    assert earlier_decision(client, NAME, "retrained-key") is None
    rerun = logged_candidate(NAME, key="retrained-key")
    judged = apply_decision(client, rerun, report(True), "1", tmp_path)
    assert judged.outcome == "promoted"  # registered and judged, not dismissed as a duplicate
    assert aliases(client)[CHAMPION] == judged.version
    # and once it is the champion, a rerun on the same data is the champion itself: nothing to train
    again = earlier_decision(client, NAME, "retrained-key")
    assert again is not None
    assert again.version == judged.version


def test_a_changed_champion_is_judged_again_and_the_better_model_wins(
    client: MlflowClient, candidates, tmp_path: Path
) -> None:
    apply_decision(client, candidates[0], report(True), None, tmp_path)
    apply_decision(client, candidates[1], report(True), "1", tmp_path)  # 2 became champion meanwhile
    judged: list[str] = []

    def beats(version: str) -> GateReport:
        judged.append(version)
        return report(True, f"improvement 0.0200 over champion {version}")

    def loses(version: str) -> GateReport:
        return report(False, f"improvement -0.0100 over champion {version}")

    better = apply_decision(client, candidates[2], report(True), "1", tmp_path, rejudge=beats)
    worse = apply_decision(client, candidates[3], report(True), "2", tmp_path, rejudge=loses)

    assert judged == ["2"]
    assert (better.outcome, better.champion_before, better.champion_after) == ("promoted", "2", "3")
    assert "judged again" in better.reason
    assert worse.outcome == "superseded"
    assert "does not beat it" in worse.reason
    assert aliases(client) == {CHAMPION: "3", PREVIOUS: "2"}


def test_a_champion_that_cannot_be_loaded_under_the_lock_is_never_beaten_by_default(
    client: MlflowClient, candidates, tmp_path: Path
) -> None:
    from tasks.evaluate import rejudge_against
    from tasks.settings import TrainingConfig
    from tasks.split import time_split
    from tasks.stores import Stores
    from tests.unit.conftest import config_dict, synthetic_frame

    config = TrainingConfig.model_validate({**config_dict("binary"), "model_name": NAME})
    splits = time_split(synthetic_frame("binary"), "ts", config.split)
    apply_decision(client, candidates[0], report(True), None, tmp_path)
    apply_decision(client, candidates[1], report(True), "1", tmp_path)  # 2 became champion meanwhile
    client.delete_model_version(NAME, "2")  # and then vanished from the registry
    rejudge = rejudge_against(config, splits, config.window, candidates[2], Stores.from_env())

    verdict = rejudge("2")

    assert not verdict.passed
    assert "champion 2 could not be scored" in verdict.reason
