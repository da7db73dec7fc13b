"""The backtest's plan and its baselines, for any dataset and task type.

Pure: plain frames, configs and fitted sklearn pipelines in, numbers out; no Prefect, MLflow or files.

- `ReplayPlan`: the periods of `replay:`, and when each period's labels arrive (a retrain at a
  period boundary sees only labels that have arrived by then).
- `measure_baselines`: the static line (the first champion on every period), the always line (a
  model refitted at every period start on the trailing labelled window, with the first champion's
  parameters, no gate), and the triangle: every always model scored on every later period too, the
  input of the hindsight frontier (tasks/frontier.py). No fit beyond the always line's own.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd

from tasks.drift import gate_metric
from tasks.ingest import rows_in
from tasks.model import features_and_target, fit_pipeline
from tasks.score import score_frame
from tasks.settings import ReplayConfig, TimeWindow, TrainingConfig

PERIOD_OFFSETS: dict[str, pd.DateOffset] = {
    "day": pd.DateOffset(days=1),
    "week": pd.DateOffset(weeks=1),
    "month": pd.DateOffset(months=1),
    "quarter": pd.DateOffset(months=3),
    "year": pd.DateOffset(years=1),
}


class ReplayError(ValueError):
    """A replay that cannot run on this data (its window holds no rows, say), with the reason."""


@dataclass(frozen=True)
class ReplayPlan:
    periods: list[TimeWindow]
    period: str
    label_delay_periods: int

    @classmethod
    def from_config(cls, replay: ReplayConfig, limit: int | None = None) -> ReplayPlan:
        """The periods of [start, end), anchored at start (the last one cut at end); the first `limit` only."""
        anchor, end, offset = pd.Timestamp(replay.start), pd.Timestamp(replay.end), PERIOD_OFFSETS[replay.period]
        periods: list[TimeWindow] = []
        while (begin := anchor + offset * len(periods)) < end and (limit is None or len(periods) < limit):
            stop = min(anchor + offset * (len(periods) + 1), end)
            periods.append(TimeWindow(start=begin.date(), end=stop.date()))
        return cls(periods=periods, period=replay.period, label_delay_periods=replay.label_delay_periods)

    def boundary(self, index: int) -> date:
        """The start of period `index`; `index == len(periods)` is the end of the last one."""
        return self.periods[index].start if index < len(self.periods) else self.periods[-1].end

    def labelled_until(self, index: int) -> date:
        """At the start of period `index`: rows before this date have their labels."""
        arrived = index - self.label_delay_periods
        if arrived >= 0:
            return self.boundary(arrived)
        return (pd.Timestamp(self.periods[0].start) - PERIOD_OFFSETS[self.period] * (-arrived)).date()

    def labels_arriving(self, index: int) -> TimeWindow | None:
        """The period whose labels arrive at the end of period `index` (None: none yet)."""
        arrived = index - self.label_delay_periods
        return self.periods[arrived] if arrived >= 0 else None

    def labels_never_arrived(self) -> list[TimeWindow]:
        """The last periods whose labels the replay itself never saw arrive (recorded after it, to measure)."""
        return self.periods[len(self.periods) - min(self.label_delay_periods, len(self.periods)) :]

    def training_window(self, index: int, days: int) -> TimeWindow:
        """The trailing `days` of labelled data at the start of period `index`."""
        end = self.labelled_until(index)
        return TimeWindow(start=end - timedelta(days=days), end=end)


@dataclass(frozen=True)
class Baselines:
    static: list[float]  # per period: the first champion's metric
    always: list[float]  # per period: the metric of the model refitted at its start
    quality: np.ndarray  # (N + 1, N): row 0 the first champion, row s + 1 the model refitted at period s
    refits: int  # periods whose always model was really refitted (the others kept the previous one)
    fit_cpu_seconds: float
    notes: list[str]
    recipe: str


def period_quality(config: TrainingConfig, target: pd.Series, scores: pd.Series) -> float:
    """The gate metric on the labelled rows of a period; NaN when none is labelled or it is undefined."""
    labelled = target.notna()
    if not labelled.any():
        return math.nan
    try:
        return gate_metric(config, target[labelled], scores[labelled])
    except ValueError:  # e.g. one class only in a tiny period: no ROC AUC exists
        return math.nan


def _scores_by_period(model: Any, config: TrainingConfig, frames: list[pd.DataFrame], first: int) -> list[float]:
    """The model's metric on periods `first`.. (one predict call for all of them)."""
    later = frames[first:]
    joined = pd.concat(later, ignore_index=True)
    predictions, _ = score_frame(model, joined, config) if len(joined) else (pd.Series(dtype="float64"), None)
    values, offset = [], 0
    for frame in later:
        part = predictions.iloc[offset : offset + len(frame)].set_axis(frame.index)
        values.append(period_quality(config, frame[config.target], part) if len(frame) else math.nan)
        offset += len(frame)
    return values


def model_quality(model: Any, config: TrainingConfig, frame: pd.DataFrame) -> float:
    """One model's metric on one period's labelled rows."""
    return _scores_by_period(model, config, [frame], 0)[0]


def measure_baselines(
    config: TrainingConfig,
    frame: pd.DataFrame,
    plan: ReplayPlan,
    static_model: Any,
    params: dict[str, Any],
    retrain_days: int,
) -> Baselines:
    """Static, always and the triangle on `frame` (validated rows covering every training window and period)."""
    periods = plan.periods
    frames = [rows_in(frame, config.timestamp, p) for p in periods]
    quality = np.full((len(periods) + 1, len(periods)), np.nan)
    quality[0, :] = _scores_by_period(static_model, config, frames, 0)
    model, refits, cpu, notes = static_model, 0, 0.0, []
    for index in range(len(periods)):
        window = plan.training_window(index, retrain_days)
        history = rows_in(frame, config.timestamp, window)
        history = history[history[config.target].notna()]
        started = time.process_time()
        try:
            model = fit_pipeline(config, params, *features_and_target(config, history))
            refits += 1
        except ValueError as error:  # no labelled rows, or one class only: keep serving the last model
            notes.append(f"{periods[index].label()}: not refitted on {window.label()} ({error}); the last model stays")
        cpu += time.process_time() - started
        quality[index + 1, index:] = _scores_by_period(model, config, frames, index)
    return Baselines(
        static=[float(v) for v in quality[0]],
        always=[float(quality[i + 1, i]) for i in range(len(periods))],
        quality=quality,
        refits=refits,
        fit_cpu_seconds=round(cpu, 2),
        notes=notes,
        recipe=(
            f"each period's model refitted at its start on the trailing {retrain_days} days of labelled rows "
            f"(labels {plan.label_delay_periods} period(s) late), with the first champion's tuned parameters, "
            "no gate"
        ),
    )
