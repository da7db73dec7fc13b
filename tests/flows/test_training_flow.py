"""The training flow on real Jan-Feb 2013 flights, under Prefect's test harness."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow import MlflowClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

from flows.rollback import rollback_flow
from flows.training import main, training
from tasks.notify import artifact_key
from tasks.promote import RollbackError
from tasks.registry import CHAMPION, PREVIOUS, TAG_DECISION
from tasks.settings import TimeWindow, TrainingConfig
from tasks.stores import DataStore, Stores
from tests.flows.conftest import with_changes

pytestmark = pytest.mark.flow


def champion_version(name: str) -> str | None:
    version = MlflowClient().get_registered_model(name).aliases.get(CHAMPION)
    return None if version is None else str(version)


def test_first_run_promotes_a_champion_with_full_lineage(home: Path, flights_config: TrainingConfig) -> None:
    decision = training(config=flights_config, reason="test: first run")

    assert decision.outcome == "promoted"
    client = MlflowClient()
    name = flights_config.model_name
    assert champion_version(name) == decision.version == "1"
    version = client.get_model_version(name, decision.version)
    assert version.tags[TAG_DECISION] == "promoted"
    run = client.get_run(version.run_id)
    tags = run.data.tags
    assert tags["driftloop.reason"] == "test: first run"
    assert tags["driftloop.git_revision"]
    assert len(tags["driftloop.config_sha256"]) == 64
    assert tags["driftloop.optuna_study"].startswith(name)
    contexts = {d.tags[0].value for d in run.inputs.dataset_inputs}
    assert contexts == {"training", "holdout"}
    assert all(d.dataset.digest for d in run.inputs.dataset_inputs)
    assert run.data.metrics["holdout_roc_auc"] > 0.6
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config", "tuning", "gate", "reference", "evaluation"} <= artifacts
    report = json.loads(
        Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="gate/report.json")).read_text()
    )
    assert report["passed"] is True
    model = mlflow.pyfunc.load_model(f"models:/{name}@{CHAMPION}")
    assert model.metadata.signature is not None
    # The batch it trained on passed, so it moved to processed/; nothing is left landed or quarantined.
    store = DataStore(Stores.from_env().data_uri)
    assert len(store.listing("processed", flights_config.name)) == 1
    assert store.listing("landed", flights_config.name) == []
    assert store.listing("quarantine", flights_config.name) == []


def test_gate_report_is_a_prefect_artifact(home: Path, flights_config: TrainingConfig) -> None:
    # The harness's Prefect server is shared by the whole session, so other tests' runs have published
    # gate reports under the same key: read the one this flow run published.
    state = training(config=flights_config, return_state=True)
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[artifact_key("gate", flights_config.model_name)]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]),
            )
        )
    assert len(artifacts) == 1, "this run did not publish exactly one gate report"
    assert artifacts[0].type == "markdown"
    assert "PASSED" in str(artifacts[0].data)


def test_identical_rerun_trains_nothing_and_returns_the_first_decision(
    home: Path, flights_config: TrainingConfig
) -> None:
    first = training(config=flights_config)
    again = training(config=flights_config, reason="rerun")

    assert first.outcome == "promoted"
    assert again.reused
    assert (again.outcome, again.version) == ("promoted", first.version)
    assert "already trained from the same data, config and code" in again.reason
    name = flights_config.model_name
    assert [str(v.version) for v in MlflowClient().search_model_versions(f"name = '{name}'")] == [first.version]
    experiment = MlflowClient().get_experiment_by_name(name)
    assert len(MlflowClient().search_runs([experiment.experiment_id], "tags.`driftloop.model_sha256` != ''")) == 1


def test_a_new_window_is_trained_and_warm_started_from_the_champion(home: Path, flights_config: TrainingConfig) -> None:
    first = training(config=flights_config)
    window = flights_config.window
    shifted = TimeWindow(start=window.start + timedelta(days=1), end=window.end + timedelta(days=1))

    second = training(config=flights_config, window=shifted)

    assert not second.reused
    assert second.version not in (None, first.version)
    version = MlflowClient().get_model_version(flights_config.model_name, second.version)
    assert version.tags[TAG_DECISION] == second.outcome
    # the outcome its numbers imply: both scored on its holdout, which the champion was not fitted on
    metrics = MlflowClient().get_run(version.run_id).data.metrics
    gain = metrics["holdout_roc_auc"] - metrics["champion_holdout_roc_auc"]
    if gain < flights_config.gate.min_improvement:
        assert second.outcome == "rejected", (gain, second.reason)
    else:  # a gain that is enough overall is only refused for a slice or a fairness bound, and says so
        assert second.outcome == "promoted" or any(w in second.reason for w in ("slice", "fairness")), second.reason
    study = mlflow.artifacts.load_dict(f"runs:/{version.run_id}/tuning/study.json")
    assert study["warm_started"] is True


def test_worse_model_is_rejected_and_champion_unchanged(
    home: Path, flights_config: TrainingConfig, weak_config: TrainingConfig
) -> None:
    good = training(config=flights_config)
    worse = training(config=weak_config, reason="test: forced worse")

    assert worse.outcome == "rejected"
    assert champion_version(flights_config.model_name) == good.version
    assert worse.champion_after == good.version


def test_better_model_promotes_and_rollback_restores_previous(
    home: Path, flights_config: TrainingConfig, weak_config: TrainingConfig
) -> None:
    weak = training(config=weak_config)
    better = training(config=flights_config)
    name = flights_config.model_name

    assert weak.outcome == better.outcome == "promoted"
    aliases = {k: str(v) for k, v in MlflowClient().get_registered_model(name).aliases.items()}
    assert aliases[CHAMPION] == better.version
    assert aliases[PREVIOUS] == weak.version

    restored = rollback_flow(model_name=name, reason="test: bad release")

    aliases = {k: str(v) for k, v in MlflowClient().get_registered_model(name).aliases.items()}
    assert aliases[CHAMPION] == weak.version == restored.champion_after
    assert PREVIOUS not in aliases
    assert MlflowClient().get_model_version(name, better.version).tags[TAG_DECISION] == "rolled_back"
    with pytest.raises(RollbackError, match="no 'previous-champion'"):
        rollback_flow(model_name=name)


def test_bad_batch_is_quarantined_and_nothing_is_trained(
    home: Path, tmp_path: Path, flights_config: TrainingConfig
) -> None:
    batch = tmp_path / "incoming" / "2013-01.csv"
    batch.parent.mkdir()
    batch.write_text("time_hour,carrier,late\n2013-01-01T10:00:00Z,UA,1\n")
    config = with_changes(flights_config, source={"kind": "files", "path": str(batch.parent)})

    state = training(config=config, return_state=True)

    assert state.is_failed()
    message = str(state.message)
    assert "2013-01.csv" in message
    assert "column is missing" in message
    store = DataStore(Stores.from_env().data_uri)
    quarantined = store.listing("quarantine", config.name)
    assert any(p.endswith("2013-01.csv") for p in quarantined)
    assert any(p.endswith(".reason.json") for p in quarantined)
    assert store.listing("landed", config.name) == []
    mlflow.set_tracking_uri(Stores.from_env().mlflow_tracking_uri)
    assert MlflowClient().search_registered_models() == []


def test_command_line_reports_a_bad_batch_in_one_clear_line_per_failure(
    home: Path, tmp_path: Path, flights_config: TrainingConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    batch = tmp_path / "incoming" / "2013-01.csv"
    batch.parent.mkdir()
    batch.write_bytes("time_hour,carrier,late\n2013-01-01T10:00:00Z,Zürich,1\n".encode("latin-1"))
    config = flights_config.model_dump(mode="json")
    config["source"] = {"kind": "files", "path": str(batch.parent)}
    config_path = tmp_path / "bad.yaml"
    config_path.write_text(yaml.safe_dump(config))

    assert main(["--config", str(config_path)]) == 1

    err = capsys.readouterr().err
    assert "training stopped" in err
    assert "2013-01.csv: table: readable: not UTF-8 text" in err
    assert main(["--config", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_a_run_on_an_older_window_is_judged_on_rows_neither_model_was_fitted_on(
    home: Path, flights_config: TrainingConfig
) -> None:
    # The concurrency test's windows: every row of the older run's own holdout (02-15..03-01) lies in
    # the newer champion's fit set (01-15..03-01), where the champion is scored in-sample and wins.
    newer = training(config=flights_config, window=TimeWindow(start="2013-01-15", end="2013-03-15"), reason="newer")
    older = training(config=flights_config, window=TimeWindow(start="2013-01-01", end="2013-03-01"), reason="older")

    client = MlflowClient()
    name = flights_config.model_name
    champion_run = client.get_run(client.get_model_version(name, newer.version).run_id)
    older_run = client.get_run(client.get_model_version(name, older.version).run_id)
    assert older_run.data.params["compared_on"] == f"version {newer.version}'s holdout"
    # the champion was scored on its own holdout (03-01..03-15), out of sample, not on rows it learnt
    assert older_run.data.metrics["champion_holdout_roc_auc"] == pytest.approx(
        champion_run.data.metrics["holdout_roc_auc"]
    )


def test_refit_after_pass_serves_the_judged_parameters_fitted_on_the_whole_window(
    home: Path, flights_config: TrainingConfig
) -> None:
    """Freshness: the registered model saw the holdout too; the version says so, and comparisons honour it."""
    import numpy as np
    import pandas as pd

    from tasks.artifacts import load_version
    from tasks.evaluate import Fitted
    from tasks.ingest import load_bundled
    from tasks.model import features_and_target, predict_scores
    from tasks.registry import TAG_FITTED_UNTIL, get_version
    from tasks.validate import check_frame

    config = with_changes(flights_config, gate={"refit_after_pass": True})
    decision = training(config=config, reason="test: refit")

    assert decision.outcome == "promoted"
    client, name = MlflowClient(), config.model_name
    version = get_version(name, decision.version, client)
    assert version.tags["driftloop.refit"] == "whole window"
    assert version.tags[TAG_FITTED_UNTIL] == "2013-03-01T00:00:00+00:00"
    run = client.get_run(version.run_id)
    assert version.tags["driftloop.model_sha256"] == run.data.tags["driftloop.refit_model_sha256"]
    assert version.tags["driftloop.model_sha256"] != run.data.tags["driftloop.model_sha256"]  # not the judged one
    assert run.data.metrics["training_cpu_seconds"] >= run.data.metrics["refit_cpu_seconds"] > 0
    served = load_version(name, decision.version, client)
    late_february = TimeWindow(start="2013-02-20", end="2013-03-01")
    frame, failures = check_frame(config, load_bundled(config, late_february), "late-february")
    assert failures == []
    features, _ = features_and_target(config, frame)
    assert np.all(np.isfinite(predict_scores(served, features, config.task)))  # loads, hash-checked, and scores
    # a later comparison knows it saw its holdout: fitted to the window's end, not to the holdout's start
    assert Fitted.of_version(version).end == pd.Timestamp("2013-03-01", tz="UTC")
