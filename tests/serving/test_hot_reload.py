"""Hot reload under traffic: a promotion switches versions with no failed or mixed answer; a broken
version is never served; a rollback is followed; every answered row is in the inference log."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
import pytest

from tasks.inference_log import REQUEST_ID
from tasks.stores import DataStore
from tests.serving.conftest import Server, World, health, request_records, start_server, wait_until_served


@pytest.fixture(scope="module")
def first_version(world: World) -> str:
    return world.register({"max_iter": 20, "learning_rate": 0.1})


@pytest.fixture(scope="module")
def server(world: World, first_version: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(world, tmp_path_factory.mktemp("serve") / "serve.log")
    wait_until_served(server, first_version)
    yield server
    server.stop()


@dataclass(frozen=True)
class Answer:
    started: float
    ended: float
    status: int
    version: str | None
    body_version: str | None
    prediction: float | None
    request_id: str


def traffic(server: Server, record: dict, stop: threading.Event, into: list[Answer], worker: int) -> None:
    with httpx.Client(timeout=30) as client:
        n = 0
        while not stop.is_set():
            n += 1
            request_id = f"load-{worker}-{n}"
            started = time.monotonic()
            response = client.post(f"{server.url}/predict", json=record, headers={"x-request-id": request_id})
            ended = time.monotonic()
            ok = response.status_code == 200
            body = response.json() if ok else {}
            into.append(
                Answer(
                    started, ended, response.status_code, response.headers.get("x-model-version"),
                    body.get("model", {}).get("version"), body["predictions"][0] if ok else None, request_id,
                )
            )  # fmt: skip


def online_request_rows(world: World) -> pd.Series:
    """Every online row written, by request id: the partitions themselves, no deduplication by row key."""
    store = DataStore(world.stores.data_uri)
    parts = [p for p in store.find("inference", world.config.name, "part-0.parquet") if "batch_id=online-" in p]
    frames = [pd.read_parquet(store.open(p)) for p in parts]
    return pd.concat(frames)[REQUEST_ID] if frames else pd.Series(dtype=object)


def test_a_promotion_under_traffic_switches_versions_with_no_failed_or_mixed_answer(
    world: World, server: Server, first_version: str
) -> None:
    record = request_records(world, 1, start=50)[0]
    answers: list[Answer] = []
    stop = threading.Event()
    workers = [threading.Thread(target=traffic, args=(server, record, stop, answers, i)) for i in range(4)]
    for thread in workers:
        thread.start()
    try:
        time.sleep(1.5)
        second = world.register({"max_iter": 60, "learning_rate": 0.2})  # moves the alias under load
        wait_until_served(server, second)
        time.sleep(1.5)
    finally:
        stop.set()
        for thread in workers:
            thread.join(timeout=30)

    assert answers, "no request was answered"
    assert [a for a in answers if a.status != 200] == []
    assert all(a.version == a.body_version for a in answers)  # every response names its version
    by_version = {a.version for a in answers}
    assert by_version == {first_version, second}
    # one version answers each request whole: each version gives the record one probability
    for version in by_version:
        assert len({round(a.prediction, 12) for a in answers if a.version == version}) == 1
    first_new = min(a.ended for a in answers if a.version == second)
    assert [a for a in answers if a.version == first_version and a.started > first_new] == []

    # every answered request's row reaches the log, once
    answered = {a.request_id for a in answers}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        logged = online_request_rows(world)
        if answered <= set(logged):
            break
        time.sleep(0.2)
    counts = logged[logged.isin(answered)].value_counts()
    assert set(counts.index) == answered
    assert (counts == 1).all()


def test_a_version_that_takes_other_inputs_is_refused_and_the_old_one_keeps_answering(
    world: World, server: Server
) -> None:
    served = health(server)["model"]["version"]
    failures_before = load_failures(server)
    narrow = world.register({"max_iter": 20}, features=["distance", "hour", "origin"])

    error = wait_for_error(server, f"version {narrow}")
    assert "other inputs than the config's features" in error
    assert health(server)["model"]["version"] == served
    answer = httpx.post(f"{server.url}/predict", json=request_records(world, 1)[0], timeout=10)
    assert answer.status_code == 200
    assert answer.headers["x-model-version"] == served
    assert load_failures(server) == failures_before + 1


def test_a_tampered_version_is_refused(world: World, server: Server) -> None:
    served = health(server)["model"]["version"]
    tampered = world.register({"max_iter": 25}, champion=False)
    (weights,) = artifact_folder(world, tampered).glob("*.skops")
    weights.write_bytes(weights.read_bytes() + b"changed after training")
    world.client.set_registered_model_alias(world.config.model_name, "champion", tampered)

    error = wait_for_error(server, f"version {tampered}")
    assert "do not match the hashes recorded at training" in error
    assert health(server)["model"]["version"] == served


def test_a_rollback_is_followed(world: World, server: Server, first_version: str) -> None:
    world.client.set_registered_model_alias(world.config.model_name, "champion", first_version)
    wait_until_served(server, first_version)
    assert health(server)["error"] is None
    answer = httpx.post(f"{server.url}/predict", json=request_records(world, 1)[0], timeout=10)
    assert answer.headers["x-model-version"] == first_version


def load_failures(server: Server) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=5).text
    (line,) = [line for line in text.splitlines() if line.startswith("driftloop_model_load_failures ")]
    return float(line.split()[1])


def wait_for_error(server: Server, fragment: str, seconds: float = 60) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        error = health(server).get("error") or ""
        if fragment in error:
            return error
        time.sleep(0.1)
    raise AssertionError(f"no error naming {fragment!r} after {seconds} s: {health(server)}")


def artifact_folder(world: World, version: str) -> Path:
    """Where the local artifact store keeps a version's model files."""
    uri = world.client.get_model_version_download_uri(world.config.model_name, version)
    return Path(uri.removeprefix("file://"))
