"""prefect.yaml, the file `prefect deploy` reads to put the deployments on a work pool, is rendered and up to date."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml
from prefect.cli.deploy._models import PrefectYamlModel

from flows.local_stack import DEPLOYMENTS_PER_CONFIG
from flows.prefect_yaml import DEFAULT_CONFIGS, render

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def committed() -> dict:
    return yaml.safe_load((REPO / "prefect.yaml").read_text())


def test_the_committed_file_is_what_the_deployments_render_to(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    rendered = render([Path(p) for p in DEFAULT_CONFIGS], "driftloop")
    assert rendered == (REPO / "prefect.yaml").read_text(), "out of date: python -m flows.prefect_yaml -o prefect.yaml"


def test_prefect_reads_it_as_valid_deployments(committed: dict) -> None:
    model = PrefectYamlModel.model_validate(committed)  # what `prefect deploy` validates before deploying
    assert len(model.deployments) == len(committed["deployments"]) > 0


def test_every_deployment_goes_to_the_pool_and_points_at_a_flow_that_exists(committed: dict) -> None:
    seen = set()
    for entry in committed["deployments"]:
        assert entry["work_pool"]["name"] == "driftloop"
        path, function = entry["entrypoint"].split(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        flow = getattr(module, function)
        key = (flow.name, entry["name"])
        assert key not in seen, f"two deployments named {key}"
        seen.add(key)
    flows = {flow for flow, _ in seen}
    assert {"training", "scoring", "monitoring", "rollback", "tuning-worker"} <= flows


def test_drift_triggers_keep_their_event_templates_for_the_server_to_fill(committed: dict) -> None:
    training = [d for d in committed["deployments"] if d["entrypoint"] == "flows/training.py:training"]
    assert training
    for entry in training:
        assert entry["concurrency_limit"] == 1  # one retraining per model at a time, queued on the server
        (trigger,) = entry["triggers"]
        assert trigger["expect"] == ["driftloop.drift.detected"]
        assert (
            trigger["match"]["prefect.resource.id"] == f"driftloop.model.{entry['parameters']['config']['model_name']}"
        )
        assert trigger["parameters"]["window"] == "{{ event.payload.retrain_window }}"


def test_the_local_stack_waits_for_as_many_deployments_as_a_config_declares(committed: dict) -> None:
    # `make up` and the end-to-end tests wait for this many served deployments per config
    per_config = {}
    for entry in committed["deployments"]:
        per_config[entry["name"]] = per_config.get(entry["name"], 0) + 1
    assert set(per_config.values()) == {DEPLOYMENTS_PER_CONFIG}
