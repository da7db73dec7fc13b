"""The replay's pure parts: the summary (means, costs, frontier, regret), the tables and the plot."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from tasks.backtest import Baselines
from tasks.replay import PeriodRow, as_records, summarise
from tasks.replay_goal import goal_checks
from tasks.replay_report import (
    frontier_markdown,
    goal_markdown,
    lines_markdown,
    plot_replay,
    shown_retrains,
    table_markdown,
)
from tasks.settings import load_config

NAN = math.nan


@pytest.fixture(scope="module")
def config(repo_root: Path):  # type: ignore[no-untyped-def]
    return load_config(repo_root / "configs" / "flights.yaml")


def rows() -> list[PeriodRow]:
    return [
        PeriodRow("2013-03-01..2013-04-01", "1", 100, 0.68, 0.68, 0.71, "no_drift", 0.24, False, None, "calm", None),
        PeriodRow(
            "2013-04-01..2013-05-01",
            "1",
            100,
            0.62,
            0.62,
            0.65,
            "drift",
            0.35,
            True,
            True,
            "better",
            10.3,
            30.0,
            signals="features, label",
        ),
        PeriodRow("2013-05-01..2013-06-01", "2", 100, 0.66, 0.60, 0.64, "drift", 0.31, True, False, "worse", 9.1, 28.0),
        PeriodRow(
            "2013-06-01..2013-07-01", "-", 0, NAN, NAN, NAN, "insufficient_data", NAN, False, None, "empty", None
        ),
    ]


def baselines() -> Baselines:
    quality = np.array(
        [
            [0.68, 0.62, 0.60, NAN],
            [0.71, 0.66, 0.61, NAN],
            [NAN, 0.65, 0.63, NAN],
            [NAN, NAN, 0.64, NAN],
            [NAN, NAN, NAN, NAN],
        ]
    )
    return Baselines([0.68, 0.62, 0.60, NAN], [0.71, 0.65, 0.64, NAN], quality, 4, 12.5, ["a note"], "the recipe")


def test_means_are_over_the_periods_every_line_was_measured_on(config) -> None:  # type: ignore[no-untyped-def]
    summary = summarise(config, rows(), baselines(), initial_cpu=20.0)

    assert summary.counted == [True, True, True, False]
    loop, static, always = (summary.line(n) for n in ("driftloop", "static", "always"))
    assert loop.mean == pytest.approx((0.68 + 0.62 + 0.66) / 3)
    assert (loop.retrains, loop.promoted, loop.cpu_seconds) == (2, 1, 58.0)
    assert static.mean == pytest.approx((0.68 + 0.62 + 0.60) / 3)
    assert (static.retrains, static.cpu_seconds) == (0, 0.0)
    assert always.mean == pytest.approx((0.71 + 0.65 + 0.64) / 3)
    assert (always.retrains, always.cpu_seconds) == (4, 12.5)
    assert summary.frontier is not None
    assert summary.frontier.best_mean[0] == pytest.approx(static.mean)
    assert summary.frontier.best_mean[4] == pytest.approx(always.mean)  # N = 4, the empty period included


def test_the_frontier_table_states_the_recipe_and_the_loops_regret(config) -> None:  # type: ignore[no-untyped-def]
    summary = summarise(config, rows(), baselines(), initial_cpu=20.0)
    text = frontier_markdown(summary, [r.period for r in rows()])

    assert "the recipe" in text
    assert "| 0 | 0.6333 | never |" in text
    regret = summary.frontier.regret(1, summary.line("driftloop").mean)  # type: ignore[union-attr]
    assert f"{regret:.4f} at its 1 promotions" in text
    assert "at its 2 retrains started" in text


def test_a_retrain_after_the_last_period_is_not_counted_against_the_frontier(config) -> None:  # type: ignore[no-untyped-def]
    three = rows()[:3]  # the last of them started a retrain (rejected), which serves no replayed period
    b = baselines()
    shorter = Baselines(b.static[:3], b.always[:3], b.quality[:4, :3], 3, 9.0, [], "the recipe")
    summary = summarise(config, three, shorter, initial_cpu=20.0)

    assert (summary.line("driftloop").retrains, summary.serving_retrains, summary.serving_promotions) == (2, 1, 1)
    assert any("serves none of the replayed periods" in note for note in summary.notes)
    assert "at its 1 retrains started" in frontier_markdown(summary, [r.period for r in three])


def test_without_baselines_only_the_loop_is_summarised(config) -> None:  # type: ignore[no-untyped-def]
    summary = summarise(config.model_copy(update={"replay": None}), rows(), None, initial_cpu=None)

    assert [line.name for line in summary.lines] == ["driftloop"]
    assert summary.frontier is None
    assert frontier_markdown(summary, []) == ""


def test_the_period_table_has_a_row_per_period_with_the_decision_and_its_cost() -> None:
    table = table_markdown(rows(), "roc_auc")

    lines = table.strip().splitlines()
    assert len(lines) == 6
    assert (
        "| 2013-04-01..2013-05-01 | v1 | 100 | 0.6200 | 0.6200 | 0.6500 | drift | features, label | 0.35 | yes | yes |"
        in lines[3]
    )
    assert lines[3].endswith("| 10.3 | 30.0 |")
    assert "| 2013-06-01..2013-07-01 | v- | 0 | - | - | - | insufficient_data |" in lines[5]


def test_the_lines_table_counts_the_periods(config) -> None:  # type: ignore[no-untyped-def]
    text = lines_markdown(summarise(config, rows(), baselines(), 20.0), "roc_auc")

    assert "(3 of 4 periods)" in text
    assert "| always | 0.6667 | 4 | 4 | 12.5 |" in text
    assert "its training: 20.0 CPU s" in text


def test_a_long_frontier_shows_chosen_k_and_the_loops() -> None:
    from tasks.frontier import hindsight_frontier

    rng = np.random.default_rng(0)
    frontier = hindsight_frontier(rng.random((101, 100)), higher_is_better=True)

    shown = shown_retrains(frontier, [37, 41])
    assert {0, 12, 50, 100, 37, 41, frontier.best_retrains()} <= set(shown)
    assert len(shown) < 40


def test_records_carry_no_nan(config) -> None:  # type: ignore[no-untyped-def]
    records = as_records(summarise(config, rows(), baselines(), 20.0))

    assert records[3]["loop"] is None
    assert records[1]["retrain_cpu_seconds"] == 30.0


def test_the_plot_has_both_panels(config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = plot_replay(summarise(config, rows(), baselines(), 20.0), "roc_auc", tmp_path / "out" / "quality.png")

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    width, height = Image.open(path).size
    assert width > 1.5 * height  # two panels side by side


# --- the decision goal read off one replay: quality against always, cost, no bad period, no bad promotion


def summary_with_a_promotion_that_lost(config, replaced: float):  # type: ignore[no-untyped-def]
    periods = rows()
    periods[2] = dataclasses.replace(periods[2], replaced=replaced)  # v2 replaced v1 at May's start
    return summarise(config, periods, baselines(), 40.0)


def test_each_criterion_is_judged_with_its_numbers(config) -> None:  # type: ignore[no-untyped-def]
    checks = {c.criterion: c for c in goal_checks(summary_with_a_promotion_that_lost(config, 0.67), True, 0.005)}

    quality = checks["quality within tolerance of always"]
    assert quality.met is False
    assert "behind by 0.0133" in quality.detail  # 0.6533 against 0.6667
    assert checks["at most half of always's retrains"].met is True  # 2 started, 4 fitted
    assert checks["no period worse than static"].met is True
    promotion = checks["no promotion worse than what it replaced"]
    assert promotion.met is False
    assert "v2 0.6600, replaced 0.6700" in promotion.detail


def test_the_tolerance_and_the_metric_direction_decide(config) -> None:  # type: ignore[no-untyped-def]
    summary = summary_with_a_promotion_that_lost(config, 0.664)
    lenient = {c.criterion: c.met for c in goal_checks(summary, True, 0.02)}
    assert lenient["quality within tolerance of always"]
    assert lenient["no promotion worse than what it replaced"]

    # lower is better: the same numbers put the loop ahead of always and behind static in May
    lower = {c.criterion: c for c in goal_checks(summary, False, 0.005)}
    assert lower["quality within tolerance of always"].met is True
    assert lower["no period worse than static"].met is False
    assert lower["no period worse than static"].detail == "2013-05-01..2013-06-01 v2 0.6600, static 0.6000"


def test_an_undrawn_line_is_not_measured_never_met(config) -> None:  # type: ignore[no-untyped-def]
    summary = summarise(config, rows(), None, None)
    checks = goal_checks(summary, True, 0.005)
    assert [c.met for c in checks] == [None, None, None, None]
    text = goal_markdown(checks, 0.005)
    assert text.count("| not measured |") == 4
    assert "tolerance 0.005" in text
