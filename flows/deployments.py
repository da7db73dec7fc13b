"""Every deployment, declared in one place, and the process that serves them.

    python -m flows.deployments --config configs/flights.yaml

registers `training/<dataset>` and `rollback/<dataset>` with the Prefect server at
PREFECT_API_URL and runs them when they are started from the UI or with
`prefect deployment run training/flights`. Parameters are validated against the typed config,
so a bad `--param` is refused before any run starts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import cast

from prefect import serve
from prefect.deployments.runner import RunnerDeployment

from flows.rollback import rollback_flow
from flows.training import training
from tasks.settings import ConfigError, load_config


def build_deployments(config_path: Path) -> list[RunnerDeployment]:
    config = load_config(config_path)
    tags = ["driftloop", config.name]
    # `to_deployment` is sync-or-async by context; here it is sync, which mypy cannot see.
    return [
        cast(
            RunnerDeployment,
            training.to_deployment(
                name=config.name,
                description=f"Train, gate and maybe promote {config.model_name}. {config.description}",
                parameters={"config": config.model_dump(mode="json"), "reason": "manual"},
                concurrency_limit=1,  # retrainings of one model run one at a time
                tags=tags,
            ),
        ),
        cast(
            RunnerDeployment,
            rollback_flow.to_deployment(
                name=config.name,
                description=f"Put the previous champion of {config.model_name} back in production.",
                parameters={"model_name": config.model_name},
                tags=tags,
            ),
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
    serve(*deployments)
    return 0


if __name__ == "__main__":
    sys.exit(main())
