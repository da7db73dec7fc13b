"""The service's HTTP contract: good requests, every kind of bad one, health before and after a champion."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest

from tasks.inference_log import REQUEST_ID, InferenceLog
from tasks.stores import DataStore
from tests.serving.conftest import Server, World, request_records, start_server, wait_until_served


@pytest.fixture(scope="module")
def server(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Started before any champion exists; the first test registers one."""
    server = start_server(world, tmp_path_factory.mktemp("serve") / "serve.log")
    yield server
    server.stop()


def test_health_is_unavailable_until_a_champion_exists_then_ready(world: World, server: Server) -> None:
    before = httpx.get(f"{server.url}/health", timeout=5)
    assert before.status_code == 503
    assert "no champion" in before.json()["error"]
    assert httpx.get(f"{server.url}/model", timeout=5).status_code == 503
    refused = httpx.post(f"{server.url}/predict", json=request_records(world, 1)[0], timeout=10)
    assert refused.status_code == 503

    version = world.register({"max_iter": 20})
    wait_until_served(server, version)
    model = httpx.get(f"{server.url}/model", timeout=5).json()
    assert model["name"] == world.config.model_name
    assert model["version"] == version
    assert model["alias"] == "champion"
    assert model["run_id"] == world.client.get_model_version(world.config.model_name, version).run_id
    assert model["training_data_digest"] == "ab" * 32
    assert model["promoted_at"]


def test_one_record_and_a_batch_are_answered_by_the_champion(world: World, server: Server) -> None:
    records = request_records(world, 25)
    one = httpx.post(f"{server.url}/predict", json=records[0], timeout=10)
    assert one.status_code == 200, one.text
    body = one.json()
    assert len(body["predictions"]) == 1
    assert 0.0 <= body["predictions"][0] <= 1.0
    assert one.headers["x-model-version"] == body["model"]["version"]

    batch = httpx.post(f"{server.url}/predict", json={"records": records}, timeout=10)
    assert batch.status_code == 200, batch.text
    predictions = batch.json()["predictions"]
    assert len(predictions) == 25
    assert predictions[0] == pytest.approx(body["predictions"][0])
    assert len(set(predictions)) > 1  # a real model, not a constant


def test_mlflow_request_shapes_give_the_same_answers(world: World, server: Server) -> None:
    records = request_records(world, 5)
    columns = list(records[0])
    split = {"dataframe_split": {"columns": columns, "data": [[r[c] for c in columns] for r in records]}}
    plain = httpx.post(f"{server.url}/predict", json=records, timeout=10).json()["predictions"]
    as_split = httpx.post(f"{server.url}/predict", json=split, timeout=10)
    as_records = httpx.post(f"{server.url}/predict", json={"dataframe_records": records}, timeout=10)
    assert as_split.status_code == as_records.status_code == 200
    assert as_split.json()["predictions"] == pytest.approx(plain)
    assert as_records.json()["predictions"] == pytest.approx(plain)


def refusal(server: Server, **request) -> list[dict]:
    answer = httpx.post(f"{server.url}/predict", timeout=10, **request)
    assert answer.status_code == 422, answer.text
    return answer.json()["detail"]


def test_each_bad_request_is_a_422_naming_the_field_and_the_rule(world: World, server: Server) -> None:
    good = request_records(world, 1)[0]

    missing = {k: v for k, v in good.items() if k != "distance"}
    assert refusal(server, json=missing) == [
        {"field": "distance", "rule": "column is missing", "rows": None, "examples": []}
    ]

    (wrong_type,) = refusal(server, json={**good, "hour": "noon"})
    assert wrong_type["field"] == "hour"
    assert "float64" in wrong_type["rule"]
    assert wrong_type["examples"] == ["noon"]

    (unknown,) = refusal(server, json={**good, "origin": "XYZ"})
    assert unknown["field"] == "origin"
    assert unknown["rule"].startswith("isin")
    assert unknown["examples"] == ["XYZ"]

    (out_of_range,) = refusal(server, json={**good, "distance": 99999})
    assert out_of_range["field"] == "distance"
    assert "less_than_or_equal_to" in out_of_range["rule"]

    (null_key,) = refusal(server, json={**good, "flight": None})
    assert null_key["field"] == "flight"
    assert "null" in null_key["rule"]

    (empty,) = refusal(server, json=[])
    assert "no records" in empty["rule"]

    (oversized,) = refusal(server, json=[good] * (world.config.serving.max_batch_rows + 1))
    assert "at most 500" in oversized["rule"]

    (malformed,) = refusal(server, content=b'{"distance": 1', headers={"content-type": "application/json"})
    assert malformed["rule"].startswith("malformed JSON")

    (not_records,) = refusal(server, json=[good, 3])
    assert "JSON object" in not_records["rule"]
    assert not_records["examples"] == [1]

    several = refusal(server, json=[{**good, "origin": "XYZ"}, {**good, "hour": 99}])
    assert {p["field"] for p in several} == {"origin", "hour"}  # every problem at once


def test_a_null_where_the_config_allows_nulls_is_answered(world: World, server: Server) -> None:
    good = request_records(world, 1)[0]
    answer = httpx.post(f"{server.url}/predict", json={**good, "wind_gust": None, "temp": None}, timeout=10)
    assert answer.status_code == 200, answer.text


def test_answered_rows_reach_the_inference_log_with_their_request_and_version(world: World, server: Server) -> None:
    log = InferenceLog(DataStore(world.stores.data_uri), world.config)
    records = request_records(world, 7, start=100)
    answer = httpx.post(f"{server.url}/predict", json=records, timeout=10, headers={"x-request-id": "req-log-test"})
    assert answer.status_code == 200
    rows = wait_for_request(log, "req-log-test", 7)
    mine = rows[rows[REQUEST_ID] == "req-log-test"]
    assert len(mine) == 7
    assert set(mine["model_version"]) == {answer.json()["model"]["version"]}
    assert mine["prediction"].tolist() == pytest.approx(answer.json()["predictions"])
    assert sorted(mine["flight"].astype(int)) == sorted(r["flight"] for r in records)


def test_metrics_count_requests_errors_rows_and_name_the_version(world: World, server: Server) -> None:
    httpx.post(f"{server.url}/predict", json=request_records(world, 3), timeout=10)
    text = httpx.get(f"{server.url}/metrics", timeout=5).text
    assert 'driftloop_requests_total{endpoint="predict",status="200"}' in text
    assert 'driftloop_request_errors_total{endpoint="predict",reason="invalid"}' in text
    assert "driftloop_request_seconds_bucket" in text
    served = httpx.get(f"{server.url}/model", timeout=5).json()["version"]
    assert f'driftloop_model_version{{model="{world.config.model_name}",version="{served}"}} 1.0' in text


def online_rows(log: InferenceLog) -> pd.DataFrame:
    frame = log.read()
    return frame[frame[REQUEST_ID].notna()]


def wait_for_request(log: InferenceLog, request_id: str, rows: int, seconds: float = 30) -> pd.DataFrame:
    """The online rows once `request_id`'s are written (earlier tests' rows may still be on their way)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        logged = online_rows(log)
        if (logged[REQUEST_ID] == request_id).sum() >= rows:
            return logged
        time.sleep(0.2)
    raise AssertionError(f"{request_id}'s {rows} rows not in the log after {seconds} s")


def test_two_worker_processes_answer_and_metrics_sum_them(world: World, tmp_path: Path) -> None:
    two = start_server(world, tmp_path / "serve.log", workers=2)
    try:
        champion = world.client.get_model_version_by_alias(world.config.model_name, "champion").version
        wait_until_served(two, str(champion))
        for _ in range(30):
            assert httpx.post(f"{two.url}/predict", json=request_records(world, 2), timeout=10).status_code == 200
        deadline, pids = time.monotonic() + 60, set()
        while len(pids) < 2 and time.monotonic() < deadline:  # the second worker may still be loading
            text = httpx.get(f"{two.url}/metrics", timeout=5).text
            pids = {
                line.split('pid="')[1].split('"')[0]
                for line in text.splitlines()
                if line.startswith("driftloop_model_version{")
            }
            time.sleep(0.2)
    finally:
        two.stop()
    assert 'driftloop_requests_total{endpoint="predict",status="200"} 30.0' in text  # summed over both
    assert "driftloop_predicted_rows_total 60.0" in text
    assert len(pids) == 2  # each worker process loaded the champion


def test_a_stop_signal_to_the_whole_process_group_still_logs_every_answered_row(world: World, tmp_path: Path) -> None:
    """Ctrl-C in a terminal, tini -g, killpg: the writer process gets the signal too, and must outlive it."""
    import os
    import signal

    log = InferenceLog(DataStore(world.stores.data_uri), world.config)
    group = start_server(world, tmp_path / "serve.log", workers=2, own_group=True)
    champion = world.client.get_model_version_by_alias(world.config.model_name, "champion").version
    wait_until_served(group, str(champion))
    ids = [f"group-stop-{i}" for i in range(40)]
    for request_id in ids:
        answer = httpx.post(
            f"{group.url}/predict", json=request_records(world, 3), timeout=10, headers={"x-request-id": request_id}
        )
        assert answer.status_code == 200
    os.killpg(group.process.pid, signal.SIGTERM)
    group.process.wait(timeout=60)
    frame = pd.concat(
        [pd.read_parquet(log.store.open(p)) for p in log.store.find("inference", world.config.name, "part-0.parquet")]
    )
    logged = frame[frame[REQUEST_ID].isin(ids)]
    assert sorted(set(logged[REQUEST_ID])) == sorted(ids)
    assert len(logged) == 3 * len(ids)
