"""The data store when two runs land, validate and settle the same bytes at once.

Two retrainings on the same window land the same batch under the same content-addressed name.
Whichever moves it first wins; the other must still read it, and must not fail on its move.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.stores import DataStore

DATA = b"the same bytes, landed by two runs"


@pytest.fixture
def store(tmp_path: Path) -> DataStore:
    return DataStore(str(tmp_path / "data"))


def test_a_writer_never_takes_another_writers_partial_file(store: DataStore) -> None:
    path, _ = store.land("flights", "batch.parquet", DATA)
    folder = Path(path).parent
    # another run is half-way through writing the same object under its own temporary name
    theirs = folder / f"{Path(path).name}.partial"
    theirs.write_bytes(b"half of it")

    store.put("landed", "flights", Path(path).name, DATA)

    assert theirs.read_bytes() == b"half of it"  # still there for its writer to move
    assert Path(path).read_bytes() == DATA
    assert store.find("landed", "flights") == [path]  # temporary files are never listed


def test_every_write_leaves_no_temporary_file(store: DataStore) -> None:
    path, _ = store.land("flights", "batch.parquet", DATA)
    store.put("landed", "flights", Path(path).name, DATA)
    assert list(Path(path).parent.glob("*.partial")) == []


def test_a_batch_settled_by_the_other_run_is_still_read_and_settled(store: DataStore) -> None:
    path, _ = store.land("flights", "batch.parquet", DATA)
    settled = store.settle(path, "flights")  # the other run got there first

    assert store.read_landed(path, "flights") == DATA
    assert store.settle(path, "flights") == settled
    assert Path(settled).read_bytes() == DATA
    assert not Path(path).exists()


def test_a_batch_quarantined_by_the_other_run_is_still_read_and_quarantined(store: DataStore) -> None:
    path, _ = store.land("flights", "batch.parquet", DATA)
    first = store.quarantine(path, "flights", {"reason": "first"})

    assert store.read_landed(path, "flights") == DATA
    assert store.quarantine(path, "flights", {"reason": "second"}) == first
    assert Path(first).read_bytes() == DATA
    # the newest reason on top, the earlier one kept: a second rejection loses nothing said before
    kept = json.loads(Path(f"{first}.reason.json").read_text())
    assert kept == {"reason": "second", "earlier": [{"reason": "first"}]}
    store.quarantine(path, "flights", {"reason": "third"})
    record = json.loads(Path(f"{first}.reason.json").read_text())
    assert [record["reason"], *[r["reason"] for r in record["earlier"]]] == ["third", "first", "second"]


def test_a_batch_that_is_nowhere_names_the_batch_and_the_areas(store: DataStore) -> None:
    path, _ = store.land("flights", "batch.parquet", DATA)
    Path(path).unlink()
    with pytest.raises(FileNotFoundError, match=r"batch\.parquet is in none of landed/, processed/ or quarantine/"):
        store.read_landed(path, "flights")


def test_a_move_that_fails_for_another_reason_still_raises(store: DataStore, tmp_path: Path) -> None:
    path, _ = store.land("flights", "batch.parquet", DATA)
    with pytest.raises(FileNotFoundError):
        store._move_unless_gone(path, str(tmp_path / "no" / "such" / "folder" / "batch.parquet"))
    assert Path(path).read_bytes() == DATA  # the batch is where it was
