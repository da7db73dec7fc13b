"""`prefect.yaml` for a work pool, rendered from the same deployments `python -m flows.deployments` serves.

    python -m flows.prefect_yaml --config configs/flights.yaml --pool driftloop > prefect.yaml
    prefect deploy --all        # from the repository's root, against the server at PREFECT_API_URL

One declaration (flows/deployments.py) feeds both shapes: local serving, and `prefect deploy` to a
pool whose workers run each flow run as a process. The typed config travels inline as each
deployment's parameters, as it does when served; the triggers (drift event -> training) and the
schedules come along. With no `pull` step, `prefect deploy` records the directory it ran in, so
every worker host needs the repository at that path (or add a `git_clone` pull step).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import prefect
import yaml
from prefect.deployments.runner import RunnerDeployment

from flows.deployments import build_deployments
from tasks.settings import ConfigError

DEFAULT_CONFIGS = ("configs/flights.yaml", "configs/bikeshare.yaml")
HEADER = """\
# Rendered by `python -m flows.prefect_yaml` from flows/deployments.py: edit those, not this file
# (tests/unit/test_prefect_yaml.py fails when it is out of date). README: "The server shape".
"""


def schedule(deployment: RunnerDeployment) -> list[dict[str, Any]]:
    rendered = []
    for item in deployment.schedules or []:
        if item.schedule is None:
            continue
        spec = item.schedule.model_dump(mode="json", exclude_none=True)
        if "interval" in spec:
            spec = {"interval": spec["interval"]}  # seconds; no anchor: the server's first run starts the clock
        rendered.append({**spec, "active": item.active})
    return rendered


def deployment_entry(deployment: RunnerDeployment, pool: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": deployment.name,
        "entrypoint": deployment.entrypoint,
        "description": deployment.description,
        "tags": list(deployment.tags),
        "work_pool": {"name": pool},
        "parameters": deployment.parameters,
    }
    if deployment.concurrency_limit is not None:
        entry["concurrency_limit"] = deployment.concurrency_limit
    if schedules := schedule(deployment):
        entry["schedules"] = schedules
    if deployment.triggers:
        entry["triggers"] = [
            trigger.model_dump(mode="json", include={"type", "name", "enabled", "match", "expect", "parameters"})
            for trigger in deployment.triggers
        ]
    return entry


class _NoAliases(yaml.SafeDumper):
    """Every deployment spelled out: `prefect deploy` and a reader see each one whole, no &anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def render(config_paths: list[Path], pool: str) -> str:
    deployments = [d for path in config_paths for d in build_deployments(path)]
    document = {
        "name": "driftloop",
        "prefect-version": prefect.__version__,
        "build": None,
        "push": None,
        "deployments": [deployment_entry(d, pool) for d in deployments],
    }
    return HEADER + yaml.dump(document, Dumper=_NoAliases, sort_keys=False, width=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print prefect.yaml for `prefect deploy` to a work pool.")
    parser.add_argument("--config", action="append", help=f"dataset config(s); default {', '.join(DEFAULT_CONFIGS)}")
    parser.add_argument(
        "--pool", default="driftloop", help="the work pool (a process pool: `prefect work-pool create`)"
    )
    parser.add_argument("-o", "--output", help="write here instead of stdout")
    args = parser.parse_args(argv)
    try:
        text = render([Path(p) for p in args.config or DEFAULT_CONFIGS], args.pool)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
