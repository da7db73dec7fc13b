"""The Optuna search: warm start from the champion, seeded determinism, persistent journal storage."""

from __future__ import annotations

import math
import time
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage

from tasks.settings import ParamRange
from tasks.split import time_split
from tasks.tune import make_storage, run_study, suggest, warm_start_params

SPACE = {
    "learning_rate": ParamRange(type="float", low=0.01, high=0.3, log=True),
    "max_leaf_nodes": ParamRange(type="int", low=4, high=31),
    "max_bins": ParamRange(type="categorical", choices=[63, 127, 255]),
}
CHAMPION = {"learning_rate": 0.123, "max_leaf_nodes": 7, "max_iter": 20}  # inside the test config's space


@pytest.fixture
def binary_setup(make_config, make_frame):
    config = make_config("binary")
    return config, time_split(make_frame("binary", rows=300), config.timestamp, config.split)


def journal(tmp_path: Path) -> str:
    return f"journal:{tmp_path / 'j.log'}"


# --- warm_start_params ------------------------------------------------------------------------


def test_warm_start_keeps_in_space_values_only() -> None:
    champion = {
        "learning_rate": 0.1,  # in range: kept
        "max_leaf_nodes": 50,  # above high: dropped
        "max_bins": 255,  # a choice: kept
        "max_depth": 3,  # not in the space at all: dropped
    }
    assert warm_start_params(SPACE, champion) == {"learning_rate": 0.1, "max_bins": 255}


@pytest.mark.parametrize(
    "champion",
    [
        {"learning_rate": 0.5, "max_leaf_nodes": 3, "max_bins": 64},  # each just outside
        {"learning_rate": "0.1", "max_leaf_nodes": 8.5, "max_bins": None},  # wrong types
        {"learning_rate": math.nan, "max_leaf_nodes": math.nan, "max_bins": math.nan},
        {"learning_rate": math.inf, "max_leaf_nodes": True},
        {"max_depth": 3},  # nothing in common
        {},
        None,
    ],
)
def test_warm_start_drops_out_of_range_missing_and_malformed_values(champion) -> None:
    assert warm_start_params(SPACE, champion) == {}


def test_warm_start_keeps_boundaries_and_integral_floats() -> None:
    champion = {"learning_rate": 0.01, "max_leaf_nodes": 31.0, "max_bins": 63}
    assert warm_start_params(SPACE, champion) == champion


# --- suggest and make_storage -----------------------------------------------------------------


def test_suggest_draws_every_dimension_inside_the_space() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        params = suggest(study.ask(), SPACE)
        assert set(params) == set(SPACE)
        assert isinstance(params["max_leaf_nodes"], int)
        assert all(SPACE[name].contains(value) for name, value in params.items()), params


def test_make_storage_journal_uri_gives_a_journal_file(tmp_path: Path) -> None:
    path = tmp_path / "studies.log"
    storage = make_storage(f"journal:{path}")
    assert isinstance(storage, JournalStorage)
    optuna.create_study(study_name="probe", storage=storage)
    assert path.exists()  # the file after the prefix is the journal, not a path relative to elsewhere


def test_an_rdb_study_beats_and_a_trial_whose_worker_died_is_tried_again(tmp_path: Path) -> None:
    """Any other URI is an RDB study (PostgreSQL in the server shape; SQLite here, the same code)."""
    storage = make_storage(f"sqlite:///{tmp_path / 'optuna.db'}", heartbeat_seconds=1, grace_seconds=1)
    assert isinstance(storage, optuna.storages.RDBStorage)
    study = optuna.create_study(study_name="shared", storage=storage)
    orphan = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    storage.record_heartbeat(orphan._trial_id)  # then its worker is killed: no more beats
    time.sleep(2.5)
    optuna.storages.fail_stale_trials(study)  # what the next worker's optimize() does first
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.WAITING]
    assert trials[1].params == orphan.params  # the same point, queued again: the budget is not lost
    assert trials[1].system_attrs["failed_trial"] == orphan.number


# --- run_study --------------------------------------------------------------------------------


def test_same_seed_gives_the_same_search(tmp_path: Path, binary_setup) -> None:
    config, splits = binary_setup
    first = run_study(config, splits, journal(tmp_path), "first", champion_params=None)
    second = run_study(config, splits, journal(tmp_path), "second", champion_params=None)
    assert first.n_trials == second.n_trials == 4
    assert first.best_params == second.best_params
    assert first.best_value == pytest.approx(second.best_value)
    params = [{k: t[k] for k in config.tuning.search_space} for t in first.trials]
    assert params == [{k: t[k] for k in config.tuning.search_space} for t in second.trials]
    assert len({tuple(p.values()) for p in params}) == 4  # it did search: four distinct points
    assert not first.warm_started
    assert first.stopped_by == second.stopped_by == "trials"  # the budget decided, not the clock


def test_a_time_cap_that_cuts_the_search_short_is_recorded(tmp_path: Path, make_config, binary_setup) -> None:
    _, splits = binary_setup
    capped = make_config("binary", tuning={"n_trials": 500, "timeout_seconds": 1})

    result = run_study(capped, splits, journal(tmp_path), "capped", champion_params=None)

    assert result.n_trials < 500
    assert result.stopped_by == "timeout"


def test_a_different_seed_searches_elsewhere(tmp_path: Path, make_config, binary_setup) -> None:
    _, splits = binary_setup
    seven, eight = (make_config("binary", tuning={"seed": seed, "n_trials": 1}) for seed in (7, 8))
    first = run_study(seven, splits, journal(tmp_path), "seed-7", champion_params=None)
    second = run_study(eight, splits, journal(tmp_path), "seed-8", champion_params=None)
    assert first.trials[0]["learning_rate"] != second.trials[0]["learning_rate"]


def test_champion_params_are_the_first_trial(tmp_path: Path, binary_setup) -> None:
    config, splits = binary_setup
    result = run_study(config, splits, journal(tmp_path), "warm", champion_params=CHAMPION)
    assert result.warm_started
    first = result.trials[0]
    assert first["source"] == "champion"
    assert first["state"] == "COMPLETE"
    assert {k: first[k] for k in CHAMPION} == CHAMPION
    assert all("source" not in t for t in result.trials[1:])
    assert result.n_trials == 4


def test_out_of_space_champion_is_not_enqueued(tmp_path: Path, binary_setup) -> None:
    config, splits = binary_setup
    result = run_study(config, splits, journal(tmp_path), "cold", champion_params={"max_leaf_nodes": 1000})
    assert not result.warm_started
    assert all("source" not in t for t in result.trials)


def test_warm_start_can_be_switched_off(tmp_path: Path, make_config, binary_setup) -> None:
    _, splits = binary_setup
    config = make_config("binary", tuning={"warm_start_from_champion": False, "n_trials": 1})
    result = run_study(config, splits, journal(tmp_path), "off", champion_params=CHAMPION)
    assert not result.warm_started
    assert result.trials[0]["learning_rate"] != CHAMPION["learning_rate"]


def test_study_is_persisted_with_its_direction_and_best_trial(tmp_path: Path, make_config, make_frame) -> None:
    config = make_config("regression", tuning={"n_trials": 3})  # rmse: lower is better
    splits = time_split(make_frame("regression", rows=300), config.timestamp, config.split)
    result = run_study(config, splits, journal(tmp_path), "rmse-study", champion_params=None)
    study = optuna.load_study(study_name="rmse-study", storage=make_storage(journal(tmp_path)))
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    assert len(study.trials) == result.n_trials == 3
    assert study.user_attrs == {"model_name": "synthetic-model", "metric": "rmse"}
    values = [t["value"] for t in result.trials if t["state"] == "COMPLETE"]
    assert result.best_value == min(values)
    assert result.n_complete + result.n_pruned + result.n_failed == result.n_trials


def test_rerunning_a_study_name_continues_it(tmp_path: Path, make_config, binary_setup) -> None:
    _, splits = binary_setup
    config = make_config("binary", tuning={"n_trials": 1})
    run_study(config, splits, journal(tmp_path), "again", champion_params=CHAMPION)
    again = run_study(config, splits, journal(tmp_path), "again", champion_params=CHAMPION)
    assert again.n_trials == 2
    assert [t.get("source") for t in again.trials] == ["champion", None]  # enqueued once, not twice
