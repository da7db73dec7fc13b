"""Injected drift shared by the flow and end-to-end tests."""

from __future__ import annotations

import pandas as pd

from tasks.ingest import load_bundled, without_labels
from tasks.settings import TimeWindow, TrainingConfig


def february_moved_to_june_with_summer_weather(config: TrainingConfig) -> pd.DataFrame:
    """February's flights, unlabelled, moved 120 days on, with six of the weather columns shifted
    far past what the model's null allows: the temperature alone is several times its calibrated
    threshold, which no policy may miss."""
    frame = without_labels(config, load_bundled(config, TimeWindow(start="2013-02-01", end="2013-03-01")))
    frame["time_hour"] = frame["time_hour"] + pd.Timedelta(days=120)
    frame["temp"] += 35
    frame["dewp"] += 30
    frame["pressure"] -= 25
    frame["wind_speed"] *= 2
    frame["humid"] = (frame["humid"] * 0.5).clip(0, 100)
    frame["visib"] = (frame["visib"] * 0.5).clip(0, 10)
    return frame
