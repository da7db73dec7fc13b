"""What a drift check reads, in time: instants up to `as_of`, offsets converted, retrain windows in whole days."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pandas as pd

from flows.monitoring import parse_as_of
from tasks.monitor import check_bounds, days_before, retrain_window


def test_a_check_at_six_pm_reads_that_days_rows_before_six() -> None:
    start, end, window = check_bounds(datetime(2013, 4, 10, 18, tzinfo=UTC), days=7)

    assert end == pd.Timestamp("2013-04-10 18:00", tz="UTC")
    assert start == pd.Timestamp("2013-04-03 18:00", tz="UTC")
    assert window.label() == "2013-04-03..2013-04-11"  # the days it touches, the 10th included


def test_a_check_at_midnight_reads_whole_days() -> None:
    start, end, window = check_bounds(datetime(2013, 5, 1, tzinfo=UTC), days=28)

    assert (start, end) == (pd.Timestamp("2013-04-03", tz="UTC"), pd.Timestamp("2013-05-01", tz="UTC"))
    assert window.label() == "2013-04-03..2013-05-01"


def test_an_explicit_offset_is_converted_not_relabelled() -> None:
    assert parse_as_of("2013-04-10T05:00:00+05:00") == datetime(2013, 4, 10, 0, tzinfo=UTC)
    assert parse_as_of("2013-04-10") == datetime(2013, 4, 10, tzinfo=UTC)  # naive is UTC
    assert check_bounds(parse_as_of("2013-04-10T05:00:00+05:00"), 1)[1] == pd.Timestamp("2013-04-10", tz="UTC")


def test_a_retrain_window_ends_where_the_labels_end(make_config) -> None:  # type: ignore[no-untyped-def]
    config = make_config("binary", monitoring={"retrain_window_days": 30})
    as_of = datetime(2013, 5, 1, tzinfo=UTC)

    assert retrain_window(config, as_of) == days_before(as_of, 30)
    assert retrain_window(config, as_of, labelled_until=date(2013, 4, 1)).label() == "2013-03-02..2013-04-01"
    assert retrain_window(config, as_of, labelled_until=date(2013, 6, 1)).end == date(2013, 5, 1)  # never future
