"""time_split: whole UTC days counted back from the last timestamp; holdout last, nothing lost."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks.settings import SplitConfig
from tasks.split import SplitError, time_split

SPLIT = SplitConfig(validation_days=5, holdout_days=7)
UTC = "UTC"


def frame_over_days(days: int = 30, every_hours: int = 6, last: str | None = None, seed: int = 0) -> pd.DataFrame:
    """Rows every `every_hours` from 2024-01-01 00:00 UTC for `days` days, shuffled, with a row id."""
    ts = pd.date_range("2024-01-01", periods=days * 24 // every_hours, freq=f"{every_hours}h", tz=UTC)
    if last is not None:
        ts = ts.append(pd.DatetimeIndex([pd.Timestamp(last, tz=UTC)]))
    frame = pd.DataFrame({"ts": ts, "value": np.arange(len(ts), dtype=float)})
    frame["row_id"] = np.arange(len(frame))
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # order must not matter


def test_holdout_is_the_last_days_and_validation_the_days_before() -> None:
    splits = time_split(frame_over_days(30), "ts", SPLIT)  # 2024-01-01 .. 2024-01-30 18:00
    assert splits.end == pd.Timestamp("2024-01-31", tz=UTC)
    assert splits.holdout_start == pd.Timestamp("2024-01-24", tz=UTC)
    assert splits.validation_start == pd.Timestamp("2024-01-19", tz=UTC)
    # four rows a day: 7 holdout days, 5 validation days, the other 18 days for training
    assert (len(splits.train), len(splits.validation), len(splits.holdout)) == (72, 20, 28)
    assert splits.holdout["ts"].dt.normalize().nunique() == 7
    assert splits.validation["ts"].dt.normalize().nunique() == 5


def test_windows_are_half_open_at_midnight() -> None:
    splits = time_split(frame_over_days(30), "ts", SPLIT)
    # a row exactly at a boundary belongs to the later window
    assert splits.holdout["ts"].min() == splits.holdout_start
    assert splits.validation["ts"].min() == splits.validation_start
    assert splits.train["ts"].max() < splits.validation_start
    assert splits.validation["ts"].max() < splits.holdout_start
    assert splits.holdout["ts"].max() < splits.end


def test_holdout_lies_after_everything_the_model_saw() -> None:
    splits = time_split(frame_over_days(30), "ts", SPLIT)
    seen = pd.concat([splits.train, splits.validation])
    assert splits.holdout["ts"].min() > seen["ts"].max()
    assert splits.validation["ts"].min() > splits.train["ts"].max()


def test_no_row_is_lost_or_duplicated() -> None:
    frame = frame_over_days(30)
    splits = time_split(frame, "ts", SPLIT)
    ids = pd.concat([splits.train, splits.validation, splits.holdout])["row_id"]
    assert sorted(ids) == list(range(len(frame)))
    for part in (splits.train, splits.validation, splits.holdout):
        assert list(part.index) == list(range(len(part)))  # fresh index, no gaps from the source frame
        assert list(part.columns) == list(frame.columns)


@pytest.mark.parametrize("last", ["2024-01-31 00:00", "2024-01-31 23:59:59"])
def test_the_last_day_counts_whole_whatever_the_hour(last: str) -> None:
    splits = time_split(frame_over_days(30, last=last), "ts", SPLIT)
    assert splits.end == pd.Timestamp("2024-02-01", tz=UTC)
    assert splits.holdout_start == pd.Timestamp("2024-01-25", tz=UTC)
    assert pd.Timestamp(last, tz=UTC) in set(splits.holdout["ts"])


def test_describe_matches_the_parts() -> None:
    splits = time_split(frame_over_days(30), "ts", SPLIT)
    described = splits.describe()
    assert described["train_rows"] == len(splits.train)
    assert described["validation_rows"] == len(splits.validation)
    assert described["holdout_rows"] == len(splits.holdout)
    assert described["holdout_start"] == "2024-01-24T00:00:00+00:00"


def test_empty_frame_is_a_split_error() -> None:
    empty = frame_over_days(30).iloc[0:0]
    with pytest.raises(SplitError, match="empty frame"):
        time_split(empty, "ts", SPLIT)


def test_too_short_data_names_the_empty_split_and_the_asked_days() -> None:
    short = frame_over_days(12)  # 12 days: 7 holdout + 5 validation leave nothing to train on
    with pytest.raises(SplitError, match="empty train split") as raised:
        time_split(short, "ts", SPLIT)
    message = str(raised.value)
    assert "5 validation and 7 holdout days" in message
    assert "2024-01-01" in message  # the span of the data is shown


def test_gap_in_the_data_empties_validation() -> None:
    frame = frame_over_days(30)
    in_validation = (frame["ts"] >= "2024-01-19") & (frame["ts"] < "2024-01-24")
    with pytest.raises(SplitError, match="empty validation split"):
        time_split(frame[~in_validation], "ts", SPLIT)


def test_missing_timestamps_are_an_error_not_silently_dropped() -> None:
    frame = frame_over_days(30)
    frame.loc[3, "ts"] = pd.NaT
    with pytest.raises(SplitError, match="1 row"):
        time_split(frame, "ts", SPLIT)
