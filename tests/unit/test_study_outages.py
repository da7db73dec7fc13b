"""The trial budget of a study several processes share, and riding out a database outage (SQLite RDB here;
the same code meets a real PostgreSQL restart in tests/server/test_workers.py)."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy.exc
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from tasks import study_outages
from tasks.services import database_unreachable
from tasks.study_outages import SURPLUS, OutageGuard, over_budget, spent
from tasks.tune import make_storage, optimize
from tasks.tune_share import take_share

X = {"x": FloatDistribution(0, 1)}


def dropped_connection() -> Exception:
    """What SQLAlchemy raises when PostgreSQL shuts down under a query (psycopg's message)."""
    return sqlalchemy.exc.OperationalError(
        "UPDATE trials ...", {}, Exception("terminating connection due to administrator command")
    )


@pytest.fixture
def study(tmp_path: Path) -> optuna.Study:
    storage = make_storage(f"sqlite:///{tmp_path / 'optuna.db'}", heartbeat_seconds=1, grace_seconds=1)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna.create_study(study_name="s", storage=storage, sampler=optuna.samplers.RandomSampler(seed=0))


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(study_outages, "OUTAGE_BACKOFF_SECONDS", (0,))


def optuna_failing_on_top() -> BaseException:
    """Optuna's commit fails on the dropped connection; its `finally` then fails on its own (UnboundLocalError)."""
    try:
        try:
            raise optuna.exceptions.StorageInternalError("an error during the commit") from dropped_connection()
        except optuna.exceptions.StorageInternalError:
            raise UnboundLocalError("cannot access local variable 'updated_state'")  # noqa: B904
    except UnboundLocalError as error:
        return error


def test_a_dropped_connection_is_found_under_optunas_own_failure() -> None:
    assert database_unreachable(optuna_failing_on_top())  # the drop is in the implicit chain
    assert not database_unreachable(ValueError("max_leaf_nodes must be > 1"))
    assert not database_unreachable(sqlalchemy.exc.OperationalError("x", {}, Exception("no such table: trials")))


def test_spent_counts_finished_trials_and_failures_that_will_not_run_again(study: optuna.Study) -> None:
    for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.FAIL):
        study.add_trial(
            create_trial(
                state=state, params={"x": 0.5}, distributions=X, value=0.1 if state == TrialState.COMPLETE else None
            )
        )
    retry_of_the_first_failure = {"failed_trial": 2, "retry_history": [2]}
    study.add_trial(
        create_trial(
            state=TrialState.WAITING, params={"x": 0.5}, distributions=X, system_attrs=retry_of_the_first_failure
        )
    )
    study.ask()  # running
    # complete + pruned + the failure nobody retries; the retried one, the waiting and the running do not count
    assert spent(study.get_trials()) == 3


def test_a_trial_lost_to_an_outage_runs_again_and_the_budget_holds(study: optuna.Study) -> None:
    calls = []

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        calls.append(x)
        if len(calls) == 2:
            raise dropped_connection()
        return x

    assert optimize(study, objective, n_trials=4, timeout=60, on_trial=None) == 4
    trials = study.get_trials()
    assert [t.state for t in trials].count(TrialState.COMPLETE) == 4
    lost = [t for t in trials if t.state == TrialState.FAIL]
    assert len(lost) == 1
    assert trials[lost[0].number + 1].params == lost[0].params  # queued again: the same point, next
    assert trials[lost[0].number + 1].system_attrs["failed_trial"] == lost[0].number
    assert spent(trials) == 4


def test_a_trial_that_fails_on_its_own_is_not_run_again(study: optuna.Study) -> None:
    def objective(trial: optuna.Trial) -> float:
        if trial.number == 1:
            raise ValueError("a bad corner of the space")
        return trial.suggest_float("x", 0, 1)

    assert optimize(study, objective, n_trials=3, timeout=60, on_trial=None) == 3
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]


def test_an_error_that_is_not_an_outage_stops_the_search(study: optuna.Study) -> None:
    def objective(trial: optuna.Trial) -> float:
        raise KeyError("target")

    with pytest.raises(KeyError, match="target"):
        optimize(study, objective, n_trials=3, timeout=60, on_trial=None)


def test_an_outage_beyond_the_allowance_fails_with_a_sentence(
    study: optuna.Study, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(study_outages, "DATABASE_OUTAGE_SECONDS", 0)
    guard = OutageGuard(study, lambda trial: 0.0)
    guard.weather(dropped_connection())  # the outage begins: wait
    time.sleep(0.01)
    with pytest.raises(RuntimeError, match="unreachable for over 0 s"):
        guard.weather(dropped_connection())


def test_a_share_takes_over_the_trial_of_a_worker_that_died(study: optuna.Study) -> None:
    """Budget 2, one trial RUNNING in a dead worker: this one runs a trial, waits, then runs the dead one's again."""
    orphan = study.ask(X)
    study._storage.record_heartbeat(orphan._trial_id)  # its worker beat once, then was killed

    ran = take_share(study, lambda t: t.suggest_float("x", 0, 1), 2, time.time() + 60, "w", poll_seconds=0.2)
    trials = study.get_trials()
    assert ran == 2
    assert spent(trials) == 2
    assert trials[orphan.number].state == TrialState.FAIL
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == orphan.number)
    assert retry.state == TrialState.COMPLETE
    assert retry.params == orphan.params
    assert {t.user_attrs.get("worker") for t in trials if t.number != orphan.number} == {"w"}


def test_of_two_processes_that_ask_at_once_for_the_last_trial_the_later_is_surplus(study: optuna.Study) -> None:
    point = {"params": {"x": 0.5}, "distributions": X}
    study.add_trial(create_trial(state=TrialState.COMPLETE, value=0.1, **point))
    first, second = study.ask(), study.ask()  # both saw one trial left of a budget of 2
    trials = study.get_trials()
    assert not over_budget(trials, first.number, 2)
    assert over_budget(trials, second.number, 2)
    second.set_user_attr(SURPLUS, True)
    study.tell(second, state=TrialState.FAIL)
    study.tell(first, 0.2)
    trials = study.get_trials()
    assert spent(trials) == 2  # the surplus trial used none of it
    # a retry queued for a failed trial takes that trial's place, not a new one
    study.add_trial(create_trial(state=TrialState.FAIL, **point))
    retry = {"failed_trial": 3, "retry_history": [3]}
    study.add_trial(create_trial(state=TrialState.WAITING, system_attrs=retry, **point))
    assert not over_budget(study.get_trials(), 4, 3)
    assert over_budget(study.get_trials(), 4, 2)


def test_two_processes_sharing_studies_spend_each_budget_exactly(tmp_path: Path) -> None:
    """Two real processes on many small SQLite studies with instant trials: the end of each study is a
    chance for both to ask for its last trial at once."""
    import subprocess
    import sys

    url, studies, budget = f"sqlite:///{tmp_path / 'shared.db'}", 20, 3
    for n in range(studies):
        optuna.create_study(study_name=f"race-{n}", storage=make_storage(url, 1, 2))
    script = (
        "import sys, time, optuna\n"
        "from tasks.tune import make_storage\n"
        "from tasks.tune_share import take_share\n"
        "optuna.logging.set_verbosity(optuna.logging.ERROR)\n"
        "storage = make_storage(sys.argv[1], 1, 2)\n"
        f"for n in range({studies}):\n"
        "    study = optuna.load_study(study_name=f'race-{n}', storage=storage)\n"
        f"    print(take_share(study, lambda t: t.suggest_float('x', 0, 1), {budget}, time.time() + 60, 'w', 0.01))\n"
    )
    workers = [subprocess.Popen([sys.executable, "-c", script, url], stdout=subprocess.PIPE, text=True) for _ in "ab"]
    ran = [[int(line) for line in w.communicate(timeout=300)[0].split()] for w in workers]
    for n in range(studies):
        trials = optuna.load_study(study_name=f"race-{n}", storage=make_storage(url, 1, 2)).get_trials()
        assert spent(trials) == budget, f"race-{n}"
        assert [t.state for t in trials].count(TrialState.COMPLETE) == budget
        assert ran[0][n] + ran[1][n] == budget  # what each process says it ran adds up, surplus excluded
