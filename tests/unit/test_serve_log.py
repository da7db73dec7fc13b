"""The online log writer: answered rows reach the inference log once, whole, and hours end as one file."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.inference_log import REQUEST_ID, InferenceLog
from tasks.serve_log import Answered, OnlineLog, start_writer_process
from tasks.stores import DataStore


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2024, 1, 10, 9, 58, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def body_of(frame: pd.DataFrame) -> bytes:
    """A request's JSON body holding these rows, as a client sends them."""
    rows = frame[["ts", "x1", "x2", "c1"]].fillna({"x2": 0.0})  # the contract allows no null x2: as answered
    rows["ts"] = rows["ts"].map(lambda t: t.isoformat())
    return json.dumps(rows.astype(object).where(rows.notna(), None).to_dict(orient="records")).encode()


def answered(frame: pd.DataFrame, request_id: str, version: str = "1", multiclass: bool = False) -> Answered:
    n = len(frame)
    if multiclass:
        probabilities = np.array([json.dumps({"low": 0.2, "mid": 0.5, "high": 0.3})] * n, dtype=object)
        return Answered(
            body_of(frame), n, np.array(["mid"] * n, dtype=object), np.full(n, 0.5), probabilities,
            "synthetic-model", version, request_id, datetime.now(UTC),
        )  # fmt: skip
    return Answered(
        body_of(frame), n, np.linspace(0, 1, n), None, None, "synthetic-model", version, request_id, datetime.now(UTC)
    )


@pytest.fixture
def keyed(make_config):
    return make_config("binary", validation={"unique_key": ["ts"]})


def partitions(root: Path) -> list[str]:
    return sorted(p.parent.name for p in (root / "inference" / "synthetic").rglob("part-0.parquet"))


def test_rows_of_two_versions_are_written_once_with_their_request_and_version(keyed, make_frame, tmp_path) -> None:
    frame = make_frame("binary", rows=30)
    writer = OnlineLog(keyed, (tmp_path / "data").as_uri())
    writer.add(answered(frame.iloc[:10], "r1", "1"))
    writer.add(answered(frame.iloc[10:30], "r2", "2"))
    assert writer.pending_rows == 30

    assert writer.flush() == 30
    assert writer.flush() == 0  # nothing twice
    log = InferenceLog(DataStore((tmp_path / "data").as_uri()), keyed).read()
    assert len(log) == 30
    assert log.groupby(REQUEST_ID)["model_version"].agg(set).to_dict() == {"r1": {"1"}, "r2": {"2"}}
    assert len(partitions(tmp_path / "data")) == 2  # one partition per version and flush


def test_a_finished_hour_is_merged_into_one_partition_and_a_stop_merges_the_rest(keyed, make_frame, tmp_path) -> None:
    frame = make_frame("binary", rows=60)
    clock = Clock()
    writer = OnlineLog(keyed, (tmp_path / "data").as_uri(), clock=clock)
    for i in range(3):  # three flushes in the 09:00 hour
        writer.add(answered(frame.iloc[i * 10 : (i + 1) * 10], f"a{i}"))
        writer.flush()
    assert len(partitions(tmp_path / "data")) == 3

    clock.now += timedelta(minutes=5)  # 10:03: the 09:00 hour is over
    writer.add(answered(frame.iloc[30:40], "b0"))
    writer.flush()
    names = partitions(tmp_path / "data")
    assert len(names) == 2
    assert any(name.startswith("batch_id=online-20240110T09-") for name in names)
    log = InferenceLog(DataStore((tmp_path / "data").as_uri()), keyed).read()
    assert sorted(log[REQUEST_ID].unique()) == ["a0", "a1", "a2", "b0"]
    assert len(log) == 40

    writer.add(answered(frame.iloc[40:60], "b1"))
    writer.stop()  # flushes, then merges the unfinished hour too
    assert len(partitions(tmp_path / "data")) == 2
    assert len(InferenceLog(DataStore((tmp_path / "data").as_uri()), keyed).read()) == 60
    assert not [p for p in (tmp_path / "data" / "inference" / "synthetic").iterdir() if not any(p.iterdir())]


def test_a_failed_write_keeps_the_rows_for_the_next_flush(keyed, make_frame, tmp_path, monkeypatch) -> None:
    writer = OnlineLog(keyed, (tmp_path / "data").as_uri())
    writer.add(answered(make_frame("binary", rows=10), "r1"))
    real = InferenceLog.append

    def down(*args, **kwargs):
        raise ConnectionError("store unreachable")

    monkeypatch.setattr(InferenceLog, "append", down)
    assert writer.flush() == 0
    assert writer.pending_rows == 10
    assert "store unreachable" in writer.last_error
    monkeypatch.setattr(InferenceLog, "append", real)
    assert writer.flush() == 10
    assert writer.last_error is None


def test_multiclass_rows_keep_their_class_probabilities(make_config, make_frame, tmp_path) -> None:
    config = make_config("multiclass", validation={"unique_key": ["ts"]})
    writer = OnlineLog(config, (tmp_path / "data").as_uri())
    writer.add(answered(make_frame("multiclass", rows=5), "m1", multiclass=True))
    assert writer.flush() == 5
    log = InferenceLog(DataStore((tmp_path / "data").as_uri()), config).read()
    assert json.loads(log["prediction_probabilities"].iloc[0]) == {"low": 0.2, "mid": 0.5, "high": 0.3}


def test_what_the_writer_adds_is_still_checked(keyed, make_frame, tmp_path) -> None:
    # the whole entry is checked before it is written: a broken prediction never reaches the log
    writer = OnlineLog(keyed, (tmp_path / "data").as_uri())
    bad = answered(make_frame("binary", rows=3), "r1")
    writer.add(
        Answered(bad.body, 3, np.array([0.1, np.nan, 1.7]), None, None, "synthetic-model", "1", "r1", bad.answered_at)
    )
    assert writer.flush() == 0
    assert "prediction" in writer.last_error
    assert writer.pending_rows == 3  # kept, not lost, not written


def test_writes_run_in_a_writer_process_when_the_service_gives_one(keyed, make_frame, tmp_path) -> None:
    import os
    import signal

    frame = make_frame("binary", rows=12)
    with start_writer_process() as pool:
        writer_pid = pool.submit(os.getpid).result()
        os.kill(writer_pid, signal.SIGTERM)  # as a killpg or Ctrl-C would: the writer outlives it
        writer = OnlineLog(keyed, (tmp_path / "data").as_uri(), executor=pool)
        writer.add(answered(frame.iloc[:5], "p1"))
        writer.add(answered(frame.iloc[5:], "p2"))
        assert writer.flush() == 12
        writer.stop()
    log = InferenceLog(DataStore((tmp_path / "data").as_uri()), keyed).read()
    assert sorted(log[REQUEST_ID].unique()) == ["p1", "p2"]
    np.testing.assert_allclose(log.sort_values("ts")["x1"].to_numpy(), frame.sort_values("ts")["x1"].to_numpy())
