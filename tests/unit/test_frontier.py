"""The hindsight frontier's dynamic program against brute force, in both metric directions."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from tasks.frontier import counted_periods, hindsight_frontier, schedule_quality


def triangle(periods: int, seed: int) -> np.ndarray:
    """Random qualities; the model retrained at period s is undefined before s, as in a real backtest."""
    quality = np.random.default_rng(seed).random((periods + 1, periods))
    quality[1:][np.tril(np.ones((periods, periods), bool), k=-1)] = np.nan
    return quality


def brute_force(quality: np.ndarray, retrains: int, higher_is_better: bool) -> float:
    counted = counted_periods(quality)
    means = [schedule_quality(quality, s, counted) for s in itertools.combinations(range(quality.shape[1]), retrains)]
    return max(means) if higher_is_better else min(means)


@pytest.mark.parametrize("higher_is_better", [True, False])
@pytest.mark.parametrize("seed", range(12))
def test_the_dynamic_program_finds_the_brute_force_best_for_every_k(seed: int, higher_is_better: bool) -> None:
    periods = 1 + seed % 7
    quality = triangle(periods, seed)
    frontier = hindsight_frontier(quality, higher_is_better)
    counted = counted_periods(quality)
    for k in range(periods + 1):
        assert frontier.best_mean[k] == pytest.approx(brute_force(quality, k, higher_is_better))
        assert len(frontier.schedules[k]) == k
        assert len(set(frontier.schedules[k])) == k
        assert schedule_quality(quality, frontier.schedules[k], counted) == pytest.approx(frontier.best_mean[k])


def test_no_retrain_is_the_static_line_and_every_retrain_the_always_line() -> None:
    quality = triangle(6, seed=99)
    frontier = hindsight_frontier(quality, higher_is_better=True)

    assert frontier.best_mean[0] == pytest.approx(quality[0].mean())
    assert frontier.best_mean[6] == pytest.approx(np.mean([quality[s + 1, s] for s in range(6)]))
    assert frontier.schedules[6] == (0, 1, 2, 3, 4, 5)


def test_lower_is_better_picks_the_smallest_error() -> None:
    # rmse: the model retrained at period 1 is far better on periods 1 and 2
    quality = np.array([[10.0, 50.0, 50.0], [9.0, 40.0, 45.0], [np.nan, 5.0, 6.0], [np.nan, np.nan, 30.0]])
    frontier = hindsight_frontier(quality, higher_is_better=False)

    assert frontier.schedules[1] == (1,)
    assert frontier.best_mean[1] == pytest.approx((10 + 5 + 6) / 3)
    assert frontier.best_retrains() == 2  # at once (9 beats 10 on period 0), then at period 1
    assert sorted(frontier.schedules[2]) == [0, 1]
    assert frontier.regret(1, mean=8.0) == pytest.approx(8.0 - 7.0)  # the line did worse by 1 bike per hour


def test_a_period_without_labels_counts_for_nobody() -> None:
    quality = triangle(4, seed=3)
    quality[:, 2] = np.nan
    frontier = hindsight_frontier(quality, higher_is_better=True)

    assert frontier.counted == (True, True, False, True)
    assert frontier.best_mean[0] == pytest.approx(np.mean(quality[0, [0, 1, 3]]))


def test_also_count_narrows_the_periods_to_those_another_line_was_measured_on() -> None:
    quality = triangle(3, seed=4)
    frontier = hindsight_frontier(quality, higher_is_better=True, also_count=np.array([True, False, True]))

    assert frontier.best_mean[0] == pytest.approx(np.mean(quality[0, [0, 2]]))


def test_regret_is_positive_when_the_line_is_below_the_frontier_in_either_direction() -> None:
    quality = triangle(3, seed=5)
    higher, lower = hindsight_frontier(quality, True), hindsight_frontier(quality, False)

    assert higher.regret(1, higher.at(1) - 0.01) == pytest.approx(0.01)
    assert lower.regret(1, lower.at(1) + 0.01) == pytest.approx(0.01)
    assert higher.at(99) == higher.best_mean[3]  # capped at one retrain per period


def test_a_year_of_daily_periods_is_exact_at_the_ends() -> None:
    quality = triangle(365, seed=6)
    frontier = hindsight_frontier(quality, higher_is_better=True)

    assert len(frontier.best_mean) == 366
    assert frontier.best_mean[0] == pytest.approx(quality[0].mean())
    assert frontier.best_mean[365] == pytest.approx(np.mean([quality[s + 1, s] for s in range(365)]))


def test_the_shape_is_checked() -> None:
    with pytest.raises(ValueError, match="shape"):
        hindsight_frontier(np.zeros((3, 3)), higher_is_better=True)
