"""The stopwatch behind `make run`'s stage table (tasks/stages.py): order, totals, failures, round trip."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tasks.stages import Stopwatch, read_stages, totals_markdown


def test_stages_keep_their_order_and_kinds_total_their_repeats(tmp_path: Path) -> None:
    watch = Stopwatch()
    watch.add("server start", 2.0)
    for month in ("jan", "feb"):
        watch.add("scoring", 1.5, f"scoring {month}")
    with watch.timed("report"):
        time.sleep(0.02)
    assert [s.name for s in watch.stages] == ["server start", "scoring jan", "scoring feb", "report"]
    totals = watch.totals()
    assert list(totals) == ["server start", "scoring", "report"]
    assert totals["scoring"] == (2, 3.0)
    assert 0.02 <= totals["report"][1] < 1.0

    path = watch.write(tmp_path, commit="abc", seconds="10.0")
    again, context = read_stages(path)
    assert again == watch
    assert context == {"commit": "abc", "seconds": "10.0"}
    table = totals_markdown(watch, whole=10.0)
    assert "| scoring | 2 | 3.0 | 30% |" in table
    assert "| other (between stages) | - | " in table  # the time no stage accounts for is shown, not lost


def test_a_stage_that_raises_still_records_its_time() -> None:
    watch = Stopwatch()
    with pytest.raises(RuntimeError), watch.timed("training"):
        raise RuntimeError("crashed")
    assert [s.kind for s in watch.stages] == ["training"]
