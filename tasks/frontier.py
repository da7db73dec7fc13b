"""The hindsight frontier: for every K, the best mean quality any schedule of K retrains could have had.

Pure. The input is the triangle the always-retrain baseline already measures: `quality[m, t]` is
model m's metric on period t, where m = 0 is the first champion (never retrained) and m = s + 1 is
the model refitted at the start of period s (defined for t >= s). A schedule of K retrains picks K
distinct period starts; each period is served by the latest model retrained at or before it, or by
the first champion. An exact dynamic program over (retrains left, last retrain) gives the best
schedule for every K from 0 to N in O(N^3) vectorised steps: well under a second for N = 365.

A period counts when every model that could serve it has a finite metric (a period without labels
counts for nobody); means are over the counted periods, so K = 0 is the static line and K = N the
always-retrain line.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Frontier:
    higher_is_better: bool
    counted: tuple[bool, ...]  # per period: does it count in the means
    best_mean: tuple[float, ...]  # index K: the best mean over the counted periods with exactly K retrains
    schedules: tuple[tuple[int, ...], ...]  # index K: one schedule reaching it (period indices)

    @property
    def periods(self) -> int:
        return len(self.counted)

    def at(self, retrains: int) -> float:
        """The frontier at `retrains` (capped at one retrain per period)."""
        return self.best_mean[min(max(retrains, 0), self.periods)]

    def best_retrains(self) -> int:
        """The smallest K whose schedule is the best of all."""
        values = np.asarray(self.best_mean)
        if np.isnan(values).all():
            return 0
        pick = np.nanargmax(values) if self.higher_is_better else np.nanargmin(values)
        return int(pick)

    def regret(self, retrains: int, mean: float) -> float:
        """How far below the frontier at `retrains` a line with this mean is (negative: above it)."""
        gap = self.at(retrains) - mean
        return float(gap if self.higher_is_better else -gap)


def counted_periods(quality: np.ndarray) -> np.ndarray:
    """Periods where the first champion and every model retrained at or before them have a finite metric."""
    periods = quality.shape[1]
    serves = np.vstack([np.ones(periods, bool), np.triu(np.ones((periods, periods), bool))])  # serves[m, t]
    return np.all(np.isfinite(quality) | ~serves, axis=0)


def hindsight_frontier(quality: np.ndarray, higher_is_better: bool, also_count: np.ndarray | None = None) -> Frontier:
    """The exact frontier of `quality` (shape (N + 1, N), as in the module docstring).

    `also_count` narrows the counted periods further (say, to those another line was measured on),
    so every mean compared with the frontier is over the same periods.
    """
    quality = np.asarray(quality, dtype=float)
    periods = quality.shape[1]
    if quality.shape != (periods + 1, periods):
        raise ValueError(f"quality must have shape (N + 1, N), got {quality.shape}")
    counted = counted_periods(quality)
    if also_count is not None:
        counted &= np.asarray(also_count, dtype=bool)
    n_counted = int(counted.sum())
    if periods == 0 or n_counted == 0:
        nothing = tuple(float("nan") for _ in range(periods + 1))  # every schedule alike: the first K periods
        alike = tuple(tuple(range(k)) for k in range(periods + 1))
        return Frontier(higher_is_better, tuple(bool(c) for c in counted), nothing, alike)
    sign = 1.0 if higher_is_better else -1.0  # maximise sign * metric
    gain = np.where(counted[None, :] & np.isfinite(quality), sign * np.nan_to_num(quality), 0.0)
    cumulative = np.zeros((periods + 1, periods + 1))
    cumulative[:, 1:] = np.cumsum(gain, axis=1)  # cumulative[m, b] - cumulative[m, a]: model m on periods a..b-1
    starts = np.arange(periods)
    before = cumulative[starts + 1, starts]  # the model retrained at s, summed before s
    # segment[s, s2]: the model retrained at s serving periods s..s2-1 (s2 > s: the next retrain)
    segment = cumulative[1:, :periods] - before[:, None]
    later = np.triu(np.ones((periods, periods), bool), k=1)
    # best[k][s]: the best total from period s on, given a retrain at s and exactly k more after it
    best = [cumulative[1:, periods] - before]
    choice: list[np.ndarray] = [np.zeros(periods, np.int32)]
    for _ in range(1, periods):
        options = np.where(later, segment + best[-1][None, :], -np.inf)
        pick = np.argmax(options, axis=1)
        best.append(options[starts, pick])
        choice.append(pick.astype(np.int32))
    totals: list[float] = [float(cumulative[0, periods])]
    schedules: list[tuple[int, ...]] = [()]
    for retrains in range(1, periods + 1):
        options = cumulative[0, :periods] + best[retrains - 1]  # first retrain at s; static before it
        first = int(np.argmax(options))
        schedule, at = [first], first
        for left in range(retrains - 1, 0, -1):
            at = int(choice[left][at])
            schedule.append(at)
        totals.append(float(options[first]))
        schedules.append(tuple(schedule))
    means = tuple(float(sign * total / n_counted) for total in totals)
    return Frontier(higher_is_better, tuple(bool(c) for c in counted), means, tuple(schedules))


def schedule_quality(quality: np.ndarray, schedule: tuple[int, ...], counted: np.ndarray) -> float:
    """The mean over counted periods of the line that retrains at the periods in `schedule`."""
    periods = quality.shape[1]
    serving, values = 0, []
    for t in range(periods):
        if t in schedule:
            serving = t + 1
        if counted[t]:
            values.append(quality[serving, t])
    return float(np.mean(values)) if values else float("nan")
