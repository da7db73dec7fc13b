"""Every deployment, declared in one place, and the process that serves them.

    python -m flows.deployments --config configs/flights.yaml

registers, for each dataset config, with the Prefect server at PREFECT_API_URL:

| deployment | started by |
| --- | --- |
| `training/<dataset>` | `prefect deployment run`, the UI, and the `driftloop.drift.detected` event (trigger) |
| `scoring/<dataset>` | an interval schedule (new files under a `files` source) or by hand with a window |
| `monitoring/<dataset>` | a cron schedule; emits the drift event when the policy says retrain |
| `rollback/<dataset>` | by hand |
| `tuning-worker/<dataset>` | the training run, when `tuning.workers` > 1 (a study shared through the database) |

Parameters are validated against the typed config, so a bad `--param` is refused before any run
starts. On shutdown the deployments are paused and the triggers this process created are removed,
so later events do not pile up runs that nobody will execute.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any, cast

from prefect import serve
from prefect.client.orchestration import get_client
from prefect.deployments.runner import RunnerDeployment
from prefect.events import DeploymentEventTrigger

from flows.monitoring import monitoring
from flows.rollback import rollback_flow
from flows.scoring import scoring
from flows.training import training
from flows.tuning_worker import tuning_worker
from tasks.notify import DRIFT_EVENT, model_resource
from tasks.recovery import reconcile
from tasks.services import redact, unavailable
from tasks.settings import ConfigError, TrainingConfig, load_config
from tasks.stores import Stores

DEFAULT_MONITORING_CRON = "0 6 * * *"  # daily, 06:00 UTC; DRIFTLOOP_MONITORING_CRON overrides
DEFAULT_SCORING_INTERVAL_SECONDS = 3600  # hourly; DRIFTLOOP_SCORING_INTERVAL_SECONDS overrides


def drift_trigger(config: TrainingConfig) -> DeploymentEventTrigger:
    """Retrain when monitoring says so: the event's retrain window and id become the parameters."""
    return DeploymentEventTrigger(
        name=f"retrain {config.model_name} on drift",
        expect={DRIFT_EVENT},
        match={"prefect.resource.id": model_resource(config.model_name)["prefect.resource.id"]},
        parameters={
            "config": config.model_dump(mode="json"),
            "window": "{{ event.payload.retrain_window }}",
            "reason": "drift event {{ event.id }}",
        },
    )


def build_deployments(config_path: Path) -> list[RunnerDeployment]:
    config = load_config(config_path)
    as_json: dict[str, Any] = config.model_dump(mode="json")
    tags = ["driftloop", config.name]
    scoring_interval = int(os.environ.get("DRIFTLOOP_SCORING_INTERVAL_SECONDS", DEFAULT_SCORING_INTERVAL_SECONDS))
    scheduled = os.environ.get("DRIFTLOOP_SCHEDULES", "on") != "off"  # off: a replay plays its own time

    # `to_deployment` is sync-or-async by context; here it is sync, which mypy cannot see.
    def deployment(flow: Any, **kwargs: Any) -> RunnerDeployment:
        return cast(RunnerDeployment, flow.to_deployment(name=config.name, tags=tags, **kwargs))

    return [
        deployment(
            training,
            description=f"Train, gate and maybe promote {config.model_name}. {config.description}",
            parameters={"config": as_json, "reason": "manual"},
            concurrency_limit=1,  # retrainings of one model run one at a time
            triggers=[drift_trigger(config)],
        ),
        deployment(
            scoring,
            description=f"Score new batches with {config.model_name}@champion into the inference log.",
            parameters={"config": as_json},
            interval=scoring_interval if config.source.kind == "files" and scheduled else None,
        ),
        deployment(
            monitoring,
            description=f"Drift check of the inference log against {config.model_name}'s reference data.",
            parameters={"config": as_json},
            cron=os.environ.get("DRIFTLOOP_MONITORING_CRON", DEFAULT_MONITORING_CRON) if scheduled else None,
        ),
        deployment(
            rollback_flow,
            description=f"Put the previous champion of {config.model_name} back in production.",
            parameters={"model_name": config.model_name},
        ),
        deployment(
            tuning_worker,
            description=f"One more process tuning a shared study of {config.model_name} (tuning.workers > 1).",
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve driftloop's deployments until stopped.")
    parser.add_argument("--config", action="append", help="dataset config(s); default configs/flights.yaml")
    args = parser.parse_args(argv)
    try:
        deployments = [d for path in args.config or ["configs/flights.yaml"] for d in build_deployments(Path(path))]
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    reconcile_at_startup()
    signal.signal(signal.SIGTERM, _interrupt)  # `make down` and tests stop us with SIGTERM
    try:
        serve(*deployments)  # returns on Ctrl-C/SIGTERM after pausing the deployments
    finally:
        remove_triggers(deployments)
    return 0


def reconcile_at_startup() -> None:
    """Repair what runs that died while nobody served them left behind (tasks/recovery.py)."""
    stores = Stores.from_env()
    stores.ensure_local_dirs()
    try:
        repairs = reconcile(stores)
    except Exception as error:  # serving must start even if, say, MLflow is down; training retries
        why = unavailable(error, stores.mlflow_tracking_uri) or f"{type(error).__name__}: {error}"
        print(f"startup reconciliation failed ({redact(why)}); each training run retries it", file=sys.stderr)
        return
    print(f"startup reconciliation: {redact(repairs.summary())}", file=sys.stderr)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def remove_triggers(deployments: list[RunnerDeployment]) -> None:
    """Delete the automations `serve` created for our triggers.

    A stopped serving process must not leave triggers behind: later events would pile up
    Scheduled runs for paused deployments that nobody will execute.
    """
    with get_client(sync_client=True) as client:
        for deployment in deployments:
            if not deployment.triggers:
                continue
            found = client.read_deployment_by_name(f"{deployment.flow_name}/{deployment.name}")
            client.delete_resource_owned_automations(f"prefect.deployment.{found.id}")
            print(f"removed the triggers of {deployment.flow_name}/{deployment.name}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
