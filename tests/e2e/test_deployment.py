"""End to end on a real `prefect server` with the deployments served by `python -m flows.deployments`:
runs started the way a person starts them (`prefect deployment run`), and drift that starts
retraining through the server's event trigger, with nobody in between."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from mlflow import MlflowClient

from flows.local_stack import PREFECT, LocalStack, local_stack, stop, wait_until
from tasks.registry import CHAMPION
from tasks.settings import load_config
from tasks.stores import Stores
from tests.budget import with_small_budget
from tests.e2e.browser import dom, rendered_text, screenshot
from tests.shifts import february_moved_to_june_with_summer_weather

pytestmark = pytest.mark.e2e

MODEL = "flights-late-arrival"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, repo_root: Path) -> Iterator[LocalStack]:
    """A Prefect server and a serving process with their own homes, for this module."""
    root = tmp_path_factory.mktemp("e2e")
    config = with_small_budget(yaml.safe_load((repo_root / "configs" / "flights.yaml").read_text()))
    config_path = root / "flights.yaml"
    config_path.write_text(yaml.safe_dump(config))
    with local_stack(root / "home", [config_path]) as stack:
        yield stack


def prefect_cli(world: LocalStack, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PREFECT, *args], env=world.env, capture_output=True, text=True, timeout=timeout)


def registry(world: LocalStack) -> MlflowClient:
    stores = Stores.from_env(world.env)
    return MlflowClient(tracking_uri=stores.mlflow_tracking_uri, registry_uri=stores.mlflow_tracking_uri)


def training_runs(world: LocalStack) -> list[dict[str, Any]]:
    deployment = httpx.get(f"{world.api_url}/deployments/name/training/flights", timeout=10).json()
    body = {"flow_runs": {"deployment_id": {"any_": [deployment["id"]]}}, "sort": "EXPECTED_START_TIME_ASC"}
    return list(httpx.post(f"{world.api_url}/flow_runs/filter", json=body, timeout=10).json())


def test_all_deployments_are_listed(world: LocalStack) -> None:
    listing = prefect_cli(world, "deployment", "ls", timeout=60)
    assert listing.returncode == 0, listing.stderr
    for name in ("training/flights", "scoring/flights", "monitoring/flights", "rollback/flights"):
        assert name in listing.stdout


def test_deployment_run_trains_and_leaves_a_champion(world: LocalStack) -> None:
    run = prefect_cli(
        world, "deployment", "run", "training/flights", "--param", "reason=e2e",
        "--watch", "--watch-interval", "2", "--watch-timeout", "840",
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Completed" in run.stdout
    champion = registry(world).get_model_version_by_alias(MODEL, CHAMPION)
    assert champion.tags["driftloop.reason"] == "e2e"
    assert champion.tags["driftloop.decision"] == "promoted"


def test_two_deployment_runs_at_once_take_turns_and_train_once(world: LocalStack) -> None:
    """The training deployment's concurrency limit (1) runs them one after the other; the second
    finds the first's version by its idempotency key and trains nothing."""
    window = '{"start": "2013-01-08", "end": "2013-03-08"}'
    ids = []
    for _ in range(2):
        started = prefect_cli(
            world, "deployment", "run", "training/flights", "--param", "reason=twin", "--param", f"window={window}",
            timeout=120,
        )  # fmt: skip
        assert started.returncode == 0, started.stderr[-2000:]
        ids.append(re.search(r"UUID: ([0-9a-f-]{36})", started.stdout).group(1))  # type: ignore[union-attr]

    def run(flow_run_id: str) -> dict[str, Any]:
        return dict(httpx.get(f"{world.api_url}/flow_runs/{flow_run_id}", timeout=10).json())

    wait_until(lambda: all(run(i)["state_type"] in {"COMPLETED", "FAILED", "CRASHED"} for i in ids), 900, "both runs")
    first, second = sorted((run(i) for i in ids), key=lambda r: r["start_time"])
    assert [first["state_type"], second["state_type"]] == ["COMPLETED", "COMPLETED"]
    assert first["end_time"] <= second["start_time"]  # never both running
    twins = [
        v for v in registry(world).search_model_versions(f"name = '{MODEL}'") if v.tags["driftloop.reason"] == "twin"
    ]
    assert len(twins) == 1


def test_bad_parameters_are_refused_before_a_run_starts(world: LocalStack) -> None:
    run = prefect_cli(
        world, "deployment", "run", "training/flights", "--param", 'config={"name": "flights", "surprise": 1}',
        timeout=120,
    )  # fmt: skip
    assert run.returncode != 0
    assert "validation" in (run.stdout + run.stderr).lower()


def test_drift_starts_retraining_through_the_trigger_once(world: LocalStack, repo_root: Path) -> None:
    """Monitoring on a shifted window emits the event; the server's trigger starts a training run
    of the served deployment, which completes and records its decision; an alert inside the
    cool-down starts nothing."""
    config = load_config(repo_root / "configs" / "flights.yaml")
    shifted = february_moved_to_june_with_summer_weather(config)
    folder = Path(world.logs.parent / "incoming")
    folder.mkdir(exist_ok=True)
    shifted.to_csv(folder / "2013-06-shifted.csv", index=False)
    files_config = {**config.model_dump(mode="json"), "source": {"kind": "files", "path": str(folder)}}
    files_config_path = world.logs.parent / "files.yaml"
    files_config_path.write_text(yaml.safe_dump(files_config))
    scored = subprocess.run(
        [sys.executable, "-m", "flows.scoring", "--config", str(files_config_path)],
        cwd=repo_root, env=world.env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert scored.returncode == 0, scored.stderr[-3000:]
    before = len(training_runs(world))

    check = prefect_cli(
        world, "deployment", "run", "monitoring/flights", "--param", "as_of=2013-06-30T00:00:00+00:00",
        "--watch", "--watch-interval", "2", "--watch-timeout", "600",
    )  # fmt: skip
    assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-3000:]

    wait_until(lambda: len(training_runs(world)) > before, 60, "the triggered training run")
    triggered = training_runs(world)[-1]
    assert triggered["parameters"]["reason"].startswith("drift event ")
    assert triggered["parameters"]["window"] == {"start": "2013-05-02", "end": "2013-06-30"}
    assert triggered["created_by"]["type"] == "AUTOMATION"

    def finished() -> bool:
        state = httpx.get(f"{world.api_url}/flow_runs/{triggered['id']}", timeout=10).json()["state"]
        return state["type"] in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}

    wait_until(finished, 600, "the triggered training run to finish")
    state = httpx.get(f"{world.api_url}/flow_runs/{triggered['id']}", timeout=10).json()["state"]
    assert state["type"] == "COMPLETED", state
    versions = registry(world).search_model_versions(f"name='{MODEL}'")
    retrained = [v for v in versions if v.tags.get("driftloop.reason", "").startswith("drift event ")]
    assert len(retrained) == 1
    # May-June flights judged on late June against a January-February champion: fresh data wins
    assert retrained[0].tags["driftloop.decision"] == "promoted", retrained[0].tags.get("driftloop.decision_reason")

    again = prefect_cli(
        world, "deployment", "run", "monitoring/flights", "--param", "as_of=2013-06-30T01:00:00+00:00",
        "--watch", "--watch-interval", "2", "--watch-timeout", "600",
    )  # fmt: skip
    assert again.returncode == 0
    time.sleep(8)  # longer than the serving process's poll interval: a run would have appeared
    assert len(training_runs(world)) == before + 1


def test_prefect_ui_shows_the_deployments_and_the_drift_report(world: LocalStack, tmp_path: Path) -> None:
    """In a real browser: the UI lists the deployments and shows the drift report artifact
    (the drift test above produced it). Screenshots are kept under the test's folder."""
    ui = world.api_url.removesuffix("/api")

    flow_names = ("training", "scoring", "monitoring")
    deployments = rendered_text(f"{ui}/deployments", showing=flow_names)
    assert "Can't connect to Server API" not in deployments
    for flow_name in flow_names:
        assert flow_name in deployments, deployments[:2000]

    latest = httpx.post(
        f"{world.api_url}/artifacts/latest/filter",
        json={"artifacts": {"key": {"any_": [f"drift-{MODEL}"]}}},
        timeout=10,
    ).json()
    assert latest, "no drift summary artifact was published"
    page = f"{ui}/artifacts/artifact/{latest[0]['latest_id']}"
    report = rendered_text(page, showing=("Drift check", "temp"))
    assert "Drift check" in report, report[:2000]
    assert "temp" in report  # the rendered summary names the shifted column
    listed = dom(f"{ui}/artifacts", showing=(f"drift-report-{MODEL}",))
    assert f"drift-report-{MODEL}" in listed  # the link to the HTML report is listed

    # The model card and the promotion history of the deployment-run trainings, rendered.
    pages = {}
    for key, heading in ((f"model-card-{MODEL}", "Model card"), (f"promotion-history-{MODEL}", "Promotion history")):
        found = httpx.post(
            f"{world.api_url}/artifacts/latest/filter", json={"artifacts": {"key": {"any_": [key]}}}, timeout=10
        ).json()
        assert found, f"no {key} artifact was published"
        pages[key] = f"{ui}/artifacts/artifact/{found[0]['latest_id']}"
        text = rendered_text(pages[key], showing=(heading,))
        assert heading in text, text[:2000]
    assert "Intended use" in rendered_text(pages[f"model-card-{MODEL}"], showing=("Intended use",))

    shots = [
        screenshot(f"{ui}/deployments", tmp_path / "deployments.png"),
        screenshot(page, tmp_path / "drift-artifact.png"),
        screenshot(pages[f"model-card-{MODEL}"], tmp_path / "model-card.png"),
    ]
    for shot in shots:
        assert shot.read_bytes()[:4] == b"\x89PNG"
        print(f"screenshot: {shot}")


def test_stopping_the_serving_process_pauses_and_removes_its_trigger(world: LocalStack) -> None:
    """Runs last in this module: a stopped `serve` must not leave a trigger that piles up runs."""
    deployment = httpx.get(f"{world.api_url}/deployments/name/training/flights", timeout=10).json()
    resource = f"prefect.deployment.{deployment['id']}"

    def triggers() -> list[dict[str, Any]]:
        response = httpx.get(f"{world.api_url}/automations/related-to/{resource}", timeout=10)
        response.raise_for_status()
        return list(response.json())

    assert triggers(), "serving should have registered the drift trigger"

    stop(world.serving)  # SIGTERM, as `make down` sends it

    assert world.serving.returncode == 0
    assert triggers() == []
    assert httpx.get(f"{world.api_url}/deployments/name/training/flights", timeout=10).json()["paused"] is True
