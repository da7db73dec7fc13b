"""The production shape with workers, for real: a process work pool and two workers as two "hosts".

One throwaway PostgreSQL holds the Prefect server's database, the MLflow server's, the Optuna
studies and the coordination database (promotion lock and history). Each worker is a host of
its own: its own DRIFTLOOP_HOME (lock folder, leases, Prefect home), nothing on disk shared but
the data store (an object store's place). The deployments come from `prefect deploy --all` with
a prefect.yaml rendered for the pool, as a user would deploy from the repository.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import optuna
import pytest
import yaml
from mlflow import MlflowClient

from flows.local_stack import PREFECT, free_port, prefect_server, stack_env, stop, wait_until
from tasks.artifacts import load_version
from tasks.history_store import audit_log
from tasks.ingest import read_source
from tasks.migrate import TAG_MIGRATED_FROM
from tasks.registry import CHAMPION
from tasks.settings import load_config
from tasks.split import time_split
from tasks.stores import Stores
from tasks.study_outages import spent
from tasks.tune import make_storage, prepare_study
from tasks.tune_share import hand_off
from tests.budget import with_small_budget
from tests.postgres import Cluster
from tests.servers import start_mlflow_server

pytestmark = pytest.mark.e2e

CONFIG = "bikeshare"  # a small dataset: the shape is under test, not the model
MODEL = "bikeshare-hourly-rentals"
POOL = "driftloop-test"
SHARED_TRIALS = 6
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@dataclass
class Shape:
    api: str
    env: dict[str, str]  # a client's: the servers' addresses, no home of its own
    hosts: dict[str, dict[str, str]]  # each worker host's environment
    config: Path
    cluster: Cluster
    repo_root: Path
    logs: Path

    def registry(self) -> MlflowClient:
        uri = self.env["DRIFTLOOP_MLFLOW_TRACKING_URI"]
        return MlflowClient(tracking_uri=uri, registry_uri=uri)

    def prefect(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PREFECT, *args], cwd=self.repo_root, env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def runs(self, flow: str) -> list[dict[str, Any]]:
        deployment = httpx.get(f"{self.api}/deployments/name/{flow}/{CONFIG}", timeout=10).json()
        body = {"flow_runs": {"deployment_id": {"any_": [deployment["id"]]}}, "sort": "EXPECTED_START_TIME_ASC"}
        return list(httpx.post(f"{self.api}/flow_runs/filter", json=body, timeout=10).json())

    def run(self, run_id: str) -> dict[str, Any]:
        return dict(httpx.get(f"{self.api}/flow_runs/{run_id}", timeout=10).json())

    def finished(self, run_id: str, timeout: float = 600) -> dict[str, Any]:
        wait_until(lambda: self.run(run_id)["state"]["type"] in FINAL, timeout, f"flow run {run_id} to finish")
        return self.run(run_id)


def small_config(repo_root: Path, folder: Path) -> Path:
    config = with_small_budget(yaml.safe_load((repo_root / "configs" / f"{CONFIG}.yaml").read_text()))
    # two processes share each study: the training run and one tuning-worker run on the pool
    config["tuning"].update({"n_trials": SHARED_TRIALS, "workers": 2, "heartbeat_seconds": 1, "grace_seconds": 4})
    # trials of a few seconds each, none pruned: long enough that a worker started after the run
    # (a process and its imports, ~5 s) still finds budget left
    config["tuning"]["pruner"] = {"n_startup_trials": SHARED_TRIALS, "n_warmup_steps": 0}
    config["tuning"]["search_space"]["max_iter"] = {"type": "int", "low": 1500, "high": 2000}
    path = folder / f"{CONFIG}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def shape(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory, repo_root: Path) -> Iterator[Shape]:
    root = tmp_path_factory.mktemp("workers")
    for database in ("prefect", "mlflow", "optuna", "driftloop"):
        cluster.create_database(database)
    mlflow_port = free_port()
    mlflow_server = start_mlflow_server(cluster.url("mlflow"), root / "artifacts", mlflow_port, root / "mlflow.log")
    servers = {
        "PREFECT_API_DATABASE_CONNECTION_URL": cluster.url("prefect", driver="asyncpg"),
        "DRIFTLOOP_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow_port}",
        "DRIFTLOOP_OPTUNA_STORAGE": cluster.url("optuna"),
        "DRIFTLOOP_COORDINATION_URL": cluster.url("driftloop"),
        "DRIFTLOOP_DATA_URI": (root / "shared-data").as_uri(),  # every host's data store (s3:// in production)
        "PREFECT_WORKER_QUERY_SECONDS": "1",
    }
    config = small_config(repo_root, root)
    workers: list[subprocess.Popen[bytes]] = []
    try:
        with prefect_server(root / "server", {**stack_env(root / "server"), **servers}) as (api, served):
            client_env = {**served, "DRIFTLOOP_HOME": str(root / "client"), "PREFECT_HOME": str(root / "client")}
            shape = Shape(api, client_env, {}, config, cluster, repo_root, root)
            created = shape.prefect("work-pool", "create", POOL, "--type", "process", timeout=120)
            assert created.returncode == 0, created.stderr
            rendered = root / "prefect.yaml"
            render = subprocess.run(
                [sys.executable, "-m", "flows.prefect_yaml", "--config", str(config), "--pool", POOL,
                 "-o", str(rendered)],
                cwd=repo_root, env=client_env, capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            assert render.returncode == 0, render.stderr
            deployed = shape.prefect("--no-prompt", "deploy", "--all", "--prefect-file", str(rendered), timeout=300)
            assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
            for host in ("host-a", "host-b"):
                home = root / host
                (home / "prefect").mkdir(parents=True)
                env = {**served, "DRIFTLOOP_HOME": str(home), "PREFECT_HOME": str(home / "prefect")}
                shape.hosts[host] = env
                with (root / f"{host}.log").open("ab") as log:
                    workers.append(
                        subprocess.Popen(
                            [PREFECT, "worker", "start", "--pool", POOL, "--type", "process", "--name", host],
                            cwd=home,
                            env=env,
                            stdout=log,
                            stderr=subprocess.STDOUT,
                            start_new_session=True,
                        )
                    )
            try:
                yield shape
            finally:  # before the server goes: a worker whose API vanished logs a page of errors
                for worker in workers:
                    stop(worker)
    finally:
        stop(mlflow_server)


def test_prefect_deploy_puts_every_deployment_on_the_pool(shape: Shape) -> None:
    for flow in ("training", "scoring", "monitoring", "rollback", "tuning-worker"):
        deployment = httpx.get(f"{shape.api}/deployments/name/{flow}/{CONFIG}", timeout=10).json()
        assert deployment["work_pool_name"] == POOL, deployment
    training = httpx.get(f"{shape.api}/deployments/name/training/{CONFIG}", timeout=10).json()
    assert training["parameters"]["config"]["tuning"]["workers"] == 2
    assert training["global_concurrency_limit"]["limit"] == 1  # retrainings of one model take turns
    automations = httpx.post(f"{shape.api}/automations/filter", json={}, timeout=10).json()
    (trigger,) = [a for a in automations if a["name"] == f"retrain {MODEL} on drift"]
    parameters = trigger["actions"][0]["parameters"]
    assert parameters["window"] == "{{ event.payload.retrain_window }}"  # kept for the event, not filled at deploy


def test_a_training_run_on_the_pool_shares_its_study_with_a_tuning_worker(shape: Shape) -> None:
    started = shape.prefect(
        "deployment", "run", f"training/{CONFIG}", "--param", "reason=pool", "--watch", "--watch-interval", "2",
        "--watch-timeout", "540", timeout=600,
    )  # fmt: skip
    assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
    training = shape.runs("training")[-1]
    assert training["state"]["type"] == "COMPLETED"
    assert training["work_pool_name"] == POOL
    worker_runs = shape.runs("tuning-worker")
    assert len(worker_runs) == 1
    assert shape.finished(worker_runs[0]["id"])["state"]["type"] == "COMPLETED"
    assert worker_runs[0]["parent_task_run_id"] is not None  # shown under the training run's tune task

    storage = shape.env["DRIFTLOOP_OPTUNA_STORAGE"]
    (study_name,) = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    trials = optuna.load_study(study_name=study_name, storage=storage).get_trials()
    by_worker = {t.user_attrs["worker"].split(" (")[0] for t in trials}
    assert by_worker == {"training run", "worker 1"}  # both processes ran trials of the one study
    assert spent(trials) == SHARED_TRIALS  # the budget is the study's, not each process's
    champion = shape.registry().get_model_version_by_alias(MODEL, CHAMPION)
    assert champion.tags["driftloop.reason"] == "pool"


def test_a_drift_event_starts_retraining_on_the_pool(shape: Shape) -> None:
    before = len(shape.runs("training"))
    emit = (  # what the monitoring flow emits when its policy says retrain (tasks/notify.py)
        "from prefect.events import emit_event; from tasks.notify import DRIFT_EVENT, model_resource;"
        f"emit_event(event=DRIFT_EVENT, resource=model_resource({MODEL!r}),"
        " payload={'retrain_window': {'start': '2011-01-15', 'end': '2011-03-01'}})"
    )
    emitted = subprocess.run(
        [sys.executable, "-c", emit], cwd=shape.repo_root, env=shape.env, capture_output=True, text=True, timeout=120
    )
    assert emitted.returncode == 0, emitted.stderr
    wait_until(lambda: len(shape.runs("training")) > before, 60, "the triggered training run")
    triggered = shape.runs("training")[-1]
    assert triggered["created_by"]["type"] == "AUTOMATION"
    assert triggered["parameters"]["reason"].startswith("drift event ")
    assert triggered["parameters"]["window"] == {"start": "2011-01-15", "end": "2011-03-01"}
    done = shape.finished(triggered["id"])
    assert done["state"]["type"] == "COMPLETED", done["state"]
    assert done["work_pool_name"] == POOL


def test_two_concurrent_retrainings_on_two_hosts_leave_one_champion_and_one_history(shape: Shape) -> None:
    """Two hosts, no file in common: only the advisory lock in the coordination database orders them."""
    client = shape.registry()
    champion_before = client.get_model_version_by_alias(MODEL, CHAMPION).version
    single = yaml.safe_load(shape.config.read_text())
    single["tuning"]["workers"] = 1  # the lock is under test here, not the shared study
    config = shape.logs / "single.yaml"
    config.write_text(yaml.safe_dump(single))
    runs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "flows.training",
                "--config",
                str(config),
                "--reason",
                f"race {host}",
                "--start",
                start,
                "--end",
                "2011-03-01",
            ],
            cwd=shape.repo_root,
            env=shape.hosts[host],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for host, start in (("host-a", "2011-01-08"), ("host-b", "2011-01-22"))
    ]
    for run in runs:
        out, err = run.communicate(timeout=600)
        assert run.returncode == 0, out[-2000:] + err[-3000:]

    versions = client.search_model_versions(f"name='{MODEL}'")
    racers = [v for v in versions if v.tags.get("driftloop.reason", "").startswith("race ")]
    assert len(racers) == 2
    assert all(v.tags["driftloop.decision"] in {"promoted", "rejected", "superseded"} for v in racers)
    champion = client.get_model_version_by_alias(MODEL, CHAMPION)  # an alias names one version
    history = audit_log(shape.env["DRIFTLOOP_COORDINATION_URL"], MODEL)
    assert history.verify() == []
    entries = history.entries()
    assert {e.version for e in entries} >= {v.version for v in racers}  # both decisions, one chain
    for earlier, later in itertools.pairwise(entries):
        assert later.champion_before == earlier.champion_after  # no decision was taken on a stale champion
    assert entries[-1].champion_after == champion.version
    assert any(e.champion_before == champion_before for e in entries)
    for host in shape.hosts.values():  # nothing went to a host's own folder
        assert not (Path(host["DRIFTLOOP_HOME"]) / "audit").exists()


KILLED_WORKER = """
import sys
from tasks.settings import load_config
from tasks.stores import Stores
from tasks.tune_share import worker_share
config = load_config(sys.argv[1])
stores = Stores.from_env()
folder, deadline, worker = sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
print(worker_share(config, stores, "killed-worker", folder, deadline, worker, f"worker {worker}"))
"""


def test_a_tuning_worker_killed_mid_trial_costs_no_budget(shape: Shape) -> None:
    """Two workers share a study; one dies (SIGKILL) inside its first trial. The survivor fails the
    silent trial after the grace period, runs its queued retry, and spends the whole budget."""
    config = load_config(shape.config)
    stores = Stores.from_env(shape.hosts["host-a"])
    splits = time_split(read_source(config, config.window), config.timestamp, config.split)
    prepare_study(config, stores.optuna_storage, "killed-worker", None)
    folder = hand_off(stores, config, "killed-worker", splits.train, splits.validation)
    deadline = time.time() + 300

    def worker(number: int, extra: dict[str, str]) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", KILLED_WORKER, str(shape.config), folder, str(deadline), str(number)],
            cwd=shape.repo_root, env={**shape.hosts["host-a"], **extra}, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    doomed = worker(1, {"DRIFTLOOP_FAILPOINTS": "during-tuning"})
    assert doomed.wait(timeout=300) == -9  # killed inside its first trial, the trial RUNNING in the study
    survivor = worker(2, {})
    out, err = survivor.communicate(timeout=300)
    assert survivor.returncode == 0, err[-3000:]

    trials = optuna.load_study(study_name="killed-worker", storage=stores.optuna_storage).get_trials()
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert [t.user_attrs["worker"] for t in failed] == ["worker 1"]
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == failed[0].number]
    assert len(retries) == 1
    assert retries[0].state in {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    assert retries[0].params == failed[0].params  # the same point of the space, run again
    assert spent(trials) == SHARED_TRIALS
    assert int(out.strip()) == SHARED_TRIALS


def test_a_run_survives_its_database_restarting_mid_run(shape: Shape) -> None:
    """PostgreSQL restarts while a training run tunes; the run finishes, or fails and the next one
    repairs what it left: either way one champion and an intact history."""
    single = yaml.safe_load(shape.config.read_text())
    single["tuning"].update({"workers": 1, "n_trials": 20})
    config = shape.logs / "restart.yaml"
    config.write_text(yaml.safe_dump(single))
    env = shape.hosts["host-a"]
    storage = env["DRIFTLOOP_OPTUNA_STORAGE"]
    earlier = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    run = subprocess.Popen(
        [sys.executable, "-m", "flows.training", "--config", str(config), "--reason", "restart",
         "--start", "2011-01-05", "--end", "2011-03-01"],
        cwd=shape.repo_root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip

    def tuning() -> bool:
        return any(s.study_name not in earlier and s.n_trials >= 2 for s in optuna.get_all_study_summaries(storage))

    wait_until(tuning, 300, "the run to be tuning")
    shape.cluster.stop()
    shape.cluster.start()
    out, err = run.communicate(timeout=600)
    (shape.logs / "restart-run.log").write_text(out + err)
    assert run.returncode == 0, err[-4000:]
    versions = shape.registry().search_model_versions(f"name='{MODEL}'")
    restarted = [v for v in versions if v.tags.get("driftloop.reason") == "restart"]
    assert len(restarted) == 1
    assert restarted[0].tags["driftloop.decision"] in {"promoted", "rejected"}
    assert audit_log(env["DRIFTLOOP_COORDINATION_URL"], MODEL).verify() == []
    (study,) = [s for s in optuna.get_all_study_summaries(storage) if s.study_name not in earlier]
    assert spent(optuna.load_study(study_name=study.study_name, storage=storage).trials) == 20  # the budget held


def test_an_embedded_home_migrates_to_the_server_shape(shape: Shape, tmp_path: Path) -> None:
    """`driftloop migrate`: a home trained on SQLite and files, copied into the PostgreSQL-backed stores; the
    copy is usable (hash-checked load, card, status) and a second migration is refused."""
    model = "migrated-rentals"
    embedded = yaml.safe_load(shape.config.read_text())
    embedded["model_name"] = model
    embedded["tuning"].update({"workers": 1, "n_trials": 3})
    config = tmp_path / "embedded.yaml"
    config.write_text(yaml.safe_dump(embedded))
    home = tmp_path / "home"
    (home / "prefect").mkdir(parents=True)  # Prefect creates its home, not the folders above it
    local = {k: v for k, v in os.environ.items() if not k.startswith(("DRIFTLOOP_", "PREFECT_API", "MLFLOW_TRACK"))}
    local |= {"DRIFTLOOP_HOME": str(home), "PREFECT_HOME": str(home / "prefect")}
    trained = subprocess.run(
        [sys.executable, "-m", "flows.training", "--config", str(config),
         "--start", "2011-01-05", "--end", "2011-03-01"],
        cwd=shape.repo_root, env=local, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-3000:]
    source = Stores.from_env({"DRIFTLOOP_HOME": str(home)})
    before = MlflowClient(tracking_uri=source.mlflow_tracking_uri, registry_uri=source.mlflow_tracking_uri)
    (version,) = before.search_model_versions(f"name='{model}'")
    history = audit_log(source.history, model)
    assert len(history.entries()) == 1

    def migrate() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "flows.cli", "--config", str(config), "migrate", "--from-home", str(home)],
            cwd=shape.repo_root, env=shape.env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip

    moved = migrate()
    assert moved.returncode == 0, moved.stderr[-3000:]
    after = shape.registry()
    copied = after.get_model_version(model, version.version)
    assert {k: v for k, v in copied.tags.items() if k != TAG_MIGRATED_FROM} == version.tags
    assert str(after.get_model_version_by_alias(model, CHAMPION).version) == str(version.version)
    assert after.get_run(copied.run_id).data.metrics == before.get_run(version.run_id).data.metrics
    assert load_version(model, version.version, after) is not None  # the files match the hashes recorded at training
    target = audit_log(shape.env["DRIFTLOOP_COORDINATION_URL"], model)
    assert [e.sha256 for e in target.entries()] == [e.sha256 for e in history.entries()]
    assert target.verify() == []
    studies = {s.study_name for s in optuna.get_all_study_summaries(shape.env["DRIFTLOOP_OPTUNA_STORAGE"])}
    assert {s.study_name for s in optuna.get_all_study_summaries(make_storage(source.optuna_storage))} <= studies
    for command in (["status"], ["card", "--version", str(version.version)]):  # what a user reads, from the new stores
        shown = subprocess.run(
            [sys.executable, "-m", "flows.cli", "--config", str(config), *command],
            cwd=shape.repo_root, env=shape.env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert shown.returncode == 0, shown.stderr[-2000:]
        assert model in shown.stdout
    again = migrate()
    assert again.returncode == 1
    assert "already registered" in again.stderr
