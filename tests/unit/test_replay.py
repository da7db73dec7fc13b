"""The replay's pure parts: periods, the quality measure, the table and the plot."""

from __future__ import annotations

import math
from datetime import date
from itertools import pairwise
from pathlib import Path

import pandas as pd
import pytest

from tasks.replay import PeriodRow, monthly_periods, plot_quality, quality, table_markdown
from tasks.settings import load_config


@pytest.fixture(scope="module")
def config(repo_root: Path):  # type: ignore[no-untyped-def]
    return load_config(repo_root / "configs" / "flights.yaml")


def test_monthly_periods_cover_the_months_without_gaps() -> None:
    periods = monthly_periods(2013, 3, 12)

    assert len(periods) == 10
    assert periods[0].start == date(2013, 3, 1)
    assert periods[-1].end == date(2014, 1, 1)
    assert all(a.end == b.start for a, b in pairwise(periods))


def test_quality_uses_labelled_rows_only(config) -> None:  # type: ignore[no-untyped-def]
    target = pd.Series([1, 0, None, 1, 0], dtype="float64")
    scores = pd.Series([0.9, 0.1, 0.99, 0.8, 0.2])

    assert quality(config, target, scores) == 1.0
    assert math.isnan(quality(config, pd.Series([None, None], dtype="float64"), pd.Series([0.1, 0.2])))


def rows() -> list[PeriodRow]:
    return [
        PeriodRow("2013-03-01..2013-04-01", "1", 100, 0.68, 0.68, 0.71, "no_drift", 0.24, False, None, "calm", None),
        PeriodRow("2013-04-01..2013-05-01", "1", 100, 0.62, 0.62, 0.65, "drift", 0.35, True, True, "better", 10.3),
    ]


def test_table_has_a_row_per_month_with_the_decision(config) -> None:  # type: ignore[no-untyped-def]
    table = table_markdown(rows(), "roc_auc")

    lines = table.strip().splitlines()
    assert len(lines) == 4
    assert "| 2013-04-01..2013-05-01 | v1 | 100 | 0.6200 | 0.6200 | 0.6500 | drift | 0.35 | yes | yes |" in lines[3]
    assert lines[2].endswith("| - |")


def test_plot_is_written(tmp_path: Path) -> None:
    path = plot_quality(rows(), "roc_auc", tmp_path / "out" / "quality.png")

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
