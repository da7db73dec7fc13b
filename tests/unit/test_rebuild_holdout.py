"""`driftloop promote --version N` re-judges a version on its own holdout, rebuilt from the very batches
it was trained on (tasks/evaluate.py rebuild_holdout): found by digest, checked, validated, split."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import pytest

from tasks.evaluate import HoldoutUnavailable, rebuild_holdout
from tasks.registry import VersionRef
from tasks.settings import TrainingConfig
from tasks.split import time_split
from tasks.stores import DataStore, sha256_bytes


@pytest.fixture
def world(tmp_path, make_config: Callable[..., TrainingConfig], make_frame: Callable[..., pd.DataFrame]):
    config = make_config("binary", validation={"min_rows": 10, "columns": {"x2": {"max_null_ratio": 0.3}}})
    frame = make_frame("binary", rows=400, days=30)
    data = frame.to_csv(index=False).encode()
    digest = sha256_bytes(data)
    store = DataStore((tmp_path / "data").as_uri())
    store.put("processed", config.name, f"{digest[:16]}-jan.csv", data)
    tags = {"driftloop.window": "2024-01-01..2024-02-01", "driftloop.batch_sha256": digest}
    return config, frame, store, VersionRef(config.model_name, "3", "run", tags), digest


def test_the_holdout_is_rebuilt_exactly_as_training_split_it(world):
    config, frame, store, version, _ = world
    rebuilt = rebuild_holdout(config, store, version)
    expected = time_split(frame.assign(ts=pd.to_datetime(frame["ts"], utc=True)), "ts", config.split).holdout
    assert len(rebuilt) == len(expected) > 0
    assert rebuilt["ts"].min() == expected["ts"].min()
    assert rebuilt["x1"].tolist() == pytest.approx(expected["x1"].tolist())


def test_a_version_without_its_window_or_batches_is_unavailable(world):
    config, _, store, version, _ = world
    bare = VersionRef(version.name, version.version, version.run_id, {})
    with pytest.raises(HoldoutUnavailable, match="records no training window or batches"):
        rebuild_holdout(config, store, bare)


def test_a_missing_or_altered_batch_is_named_never_used(world):
    config, frame, store, version, digest = world
    gone = VersionRef(
        version.name, version.version, version.run_id, {**version.tags, "driftloop.batch_sha256": "f" * 64}
    )
    with pytest.raises(HoldoutUnavailable, match=r"batch ffffffffffffffff of version 3 is not in processed/"):
        rebuild_holdout(config, store, gone)
    store.put("processed", config.name, f"{digest[:16]}-jan.csv", frame.head(300).to_csv(index=False).encode())
    with pytest.raises(HoldoutUnavailable, match="does not match the digest recorded on version 3"):
        rebuild_holdout(config, store, version)


def test_a_batch_that_no_longer_validates_is_unavailable(world):
    config, frame, store, version, _ = world
    broken = frame.drop(columns="x1").to_csv(index=False).encode()
    digest = sha256_bytes(broken)
    store.put("processed", config.name, f"{digest[:16]}-broken.csv", broken)
    stale = VersionRef(
        version.name, version.version, version.run_id, {**version.tags, "driftloop.batch_sha256": digest}
    )
    with pytest.raises(HoldoutUnavailable, match="no longer passes validation"):
        rebuild_holdout(config, store, stale)
