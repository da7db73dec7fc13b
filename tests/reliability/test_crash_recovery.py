"""kill -9 at every stage of a training run, then run again: nothing is lost, the loop goes on.

Each test first trains a champion on January, then starts a retraining on January-February that
SIGKILLs itself at a failpoint (tasks/faults.py): no handler runs, as with `kill -9` or the OOM
killer. The test checks the wreck is real (something is left RUNNING or half-done), then
starts the same run again: its startup reconciliation repairs what the killed run left, and the
rerun finishes the job. Afterwards the five invariants hold, and the champion is either the one
from before or the new, fully gated version.
"""

from __future__ import annotations

import json
import signal

import optuna
import pytest
from mlflow import MlflowClient

from tasks.faults import AFTER_LOG_MODEL, AFTER_REGISTER, DURING_TUNING
from tasks.recovery import LEASE_FOLDER
from tasks.registry import CHAMPION, TAG_DECISION
from tasks.tune import make_storage
from tests.reliability.conftest import DATASET, MODEL, World
from tests.reliability.invariants import assert_invariants

BASELINE = ("--start", "2013-01-01", "--end", "2013-02-01", "--reason", "baseline")
RETRAIN = ("--start", "2013-01-01", "--end", "2013-03-01", "--reason", "retrain")


def registry(world: World) -> MlflowClient:
    uri = world.stores.mlflow_tracking_uri
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def champion_version(world: World) -> str:
    return str(registry(world).get_model_version_by_alias(MODEL, CHAMPION).version)


def running_trials(world: World) -> int:
    storage = make_storage(world.stores.optuna_storage)
    storage = optuna.storages.get_storage(storage) if isinstance(storage, str) else storage
    return sum(
        trial.state == optuna.trial.TrialState.RUNNING
        for study in storage.get_all_studies()
        for trial in storage.get_all_trials(study._study_id, deepcopy=False)
    )


def running_mlflow_runs(world: World) -> int:
    client = registry(world)
    experiment = client.get_experiment_by_name(MODEL)
    return len(client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'")) if experiment else 0


def dead_leases(world: World) -> list[dict]:
    folder = world.stores.lock_dir / LEASE_FOLDER
    return [json.loads(p.read_text()) for p in folder.glob("*.json")]


def trained(world: World, args: tuple[str, ...]) -> str:
    done = world.train(*args)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout


@pytest.mark.parametrize("point", [DURING_TUNING, AFTER_LOG_MODEL, AFTER_REGISTER])
def test_a_run_killed_at_any_stage_is_repaired_by_the_next_one(world: World, point: str) -> None:
    trained(world, BASELINE)
    before = champion_version(world)

    killed = world.train(*RETRAIN, failpoint=point)

    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    [lease] = dead_leases(world)  # the killed run's lease record is left behind, its lock is free
    versions = registry(world).search_model_versions(f"name = '{MODEL}'")
    if point == DURING_TUNING:
        assert running_trials(world) == 1
        assert len(versions) == 1
    if point == AFTER_LOG_MODEL:
        assert running_mlflow_runs(world) == 1
        assert len(versions) == 1  # logged, never registered: no half-registered version
    if point == AFTER_REGISTER:
        assert running_mlflow_runs(world) == 0
        [new] = [v for v in versions if str(v.version) != before]
        assert new.tags[TAG_DECISION] == "promoting"  # registered, aliases not moved
        assert champion_version(world) == before

    rerun = trained(world, RETRAIN)

    assert dead_leases(world) == []
    assert running_trials(world) == 0
    assert running_mlflow_runs(world) == 0
    after = champion_version(world)
    versions = {str(v.version): v for v in registry(world).search_model_versions(f"name = '{MODEL}'")}
    assert len(versions) == 2  # the baseline and exactly one retrained version, whatever happened
    [retrained] = [v for version, v in versions.items() if version != before]
    assert after in (before, str(retrained.version))
    if after != before:
        assert retrained.tags[TAG_DECISION] == "promoted"
        assert str(registry(world).get_model_version_by_alias(MODEL, "previous-champion").version) == before
    if point == AFTER_REGISTER:
        # reconciliation finished the interrupted promotion; the rerun found it and trained nothing
        assert after == str(retrained.version)
        assert "promotion completed by reconciliation" in retrained.tags["driftloop.decision_reason"]
        assert "already trained from the same data, config and code" in rerun
    else:
        killed_runs = registry(world).search_runs(
            [registry(world).get_experiment_by_name(MODEL).experiment_id],
            f"tags.`prefect.flow_run_id` = '{lease['flow_run_id']}'",
        )
        assert all(r.data.tags.get(TAG_DECISION) == "abandoned" for r in killed_runs)
        assert all(r.info.status == "KILLED" for r in killed_runs)
    assert_invariants(world.stores, MODEL, DATASET, prefect_api=world.api)


def test_the_killed_flow_run_is_marked_crashed_in_prefect(world: World) -> None:
    import httpx

    killed = world.train(*BASELINE, failpoint=DURING_TUNING)
    assert killed.returncode == -signal.SIGKILL
    [lease] = dead_leases(world)
    state = httpx.get(f"{world.api}/flow_runs/{lease['flow_run_id']}", timeout=10).json()["state_type"]
    assert state == "RUNNING"  # nobody told the server: the process just vanished

    repaired = world.reconcile()

    assert repaired.returncode == 0, repaired.stderr[-3000:]
    assert "1 dead run(s)" in repaired.stdout
    state = httpx.get(f"{world.api}/flow_runs/{lease['flow_run_id']}", timeout=10).json()["state_type"]
    assert state == "CRASHED"
    assert_invariants(world.stores, MODEL, DATASET, prefect_api=world.api)
