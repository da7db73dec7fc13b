"""Split by time: train, then validation, then a holdout that is the most recent labelled window.

`time_split` is pure: a frame in, three frames and their boundaries out. No shuffling, so the holdout always
lies after everything the model or the tuner saw.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.settings import SplitConfig, TrainingConfig


@dataclass(frozen=True)
class Splits:
    train: pd.DataFrame
    validation: pd.DataFrame
    holdout: pd.DataFrame
    validation_start: pd.Timestamp
    holdout_start: pd.Timestamp
    end: pd.Timestamp

    def describe(self) -> dict[str, str | int]:
        return {
            "train_rows": len(self.train),
            "validation_rows": len(self.validation),
            "holdout_rows": len(self.holdout),
            "validation_start": self.validation_start.isoformat(),
            "holdout_start": self.holdout_start.isoformat(),
            "end": self.end.isoformat(),
        }


class SplitError(ValueError):
    """The data does not cover the windows the config asks for."""


def time_split(frame: pd.DataFrame, timestamp: str, split: SplitConfig) -> Splits:
    """Cut at whole days counted back from the day after the last timestamp."""
    if frame.empty:
        raise SplitError("cannot split an empty frame")
    stamps = frame[timestamp]
    if missing := int(stamps.isna().sum()):  # NaT compares False everywhere: the row would fall in no split
        raise SplitError(f"{missing} row(s) have no {timestamp!r} timestamp; cannot place them in a split")
    end = stamps.max().floor("D") + pd.Timedelta(days=1)
    holdout_start = end - pd.Timedelta(days=split.holdout_days)
    validation_start = holdout_start - pd.Timedelta(days=split.validation_days)
    parts = {
        "train": frame[stamps < validation_start],
        "validation": frame[(stamps >= validation_start) & (stamps < holdout_start)],
        "holdout": frame[stamps >= holdout_start],
    }
    if empty := [name for name, part in parts.items() if part.empty]:
        raise SplitError(
            f"empty {', '.join(empty)} split: data spans {stamps.min()} to {stamps.max()}, "
            f"but the config asks for {split.validation_days} validation and {split.holdout_days} holdout days"
        )
    return Splits(
        train=parts["train"].reset_index(drop=True),
        validation=parts["validation"].reset_index(drop=True),
        holdout=parts["holdout"].reset_index(drop=True),
        validation_start=validation_start,
        holdout_start=holdout_start,
        end=end,
    )


@task(name="split", cache_policy=NO_CACHE)
def split(config: TrainingConfig, frame: pd.DataFrame) -> Splits:
    splits = time_split(frame, config.timestamp, config.split)
    get_run_logger().info("split: %s", splits.describe())
    return splits
