"""Which rows two models can be compared on: those neither was fitted on (pure)."""

from __future__ import annotations

from datetime import date

import pandas as pd

from tasks.evaluate import Fitted, neither_fitted
from tasks.settings import SplitConfig, TimeWindow
from tasks.split import time_split

HOURS = pd.DataFrame({"ts": pd.date_range("2013-01-01", "2013-03-15", freq="h", tz="UTC", inclusive="left")})
SPLIT = SplitConfig(validation_days=10, holdout_days=14)


def fitted(start: str, end: str) -> tuple[Fitted, pd.DataFrame]:
    window = TimeWindow(start=date.fromisoformat(start), end=date.fromisoformat(end))
    inside = HOURS[(HOURS["ts"] >= pd.Timestamp(start, tz="UTC")) & (HOURS["ts"] < pd.Timestamp(end, tz="UTC"))]
    splits = time_split(inside, "ts", SPLIT)
    return Fitted.of_splits(window, splits.holdout_start), splits.holdout


def test_the_older_runs_holdout_lies_wholly_in_the_newer_ones_fit_set() -> None:
    older, older_holdout = fitted("2013-01-01", "2013-03-01")
    newer, newer_holdout = fitted("2013-01-15", "2013-03-15")

    assert len(older_holdout) == 336
    assert neither_fitted(older_holdout, "ts", older, newer).empty  # 336 of 336 rows: in-sample for the newer
    assert len(neither_fitted(newer_holdout, "ts", older, newer)) == len(newer_holdout) == 336


def test_a_model_is_never_fitted_on_its_own_holdout_and_rows_before_a_window_are_outside_it() -> None:
    model, holdout = fitted("2013-02-01", "2013-03-01")

    assert len(neither_fitted(holdout, "ts", model)) == len(holdout)
    january = HOURS[HOURS["ts"] < pd.Timestamp("2013-02-01", tz="UTC")]
    assert len(neither_fitted(january, "ts", model)) == len(january)
    assert model.window_end == date(2013, 3, 1)


def test_slice_metrics_score_each_value_on_its_own_rows_and_name_missing_values(make_config) -> None:  # type: ignore[no-untyped-def]
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from tasks.evaluate import slice_metrics

    config = make_config("binary")  # slices: [c1]
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {
            "x1": rng.random(300),
            "x2": rng.random(300),
            "c1": np.array(["a", "b", None] * 100, dtype=object),
            "y": rng.integers(0, 2, 300),
        }
    )
    scores = np.where(frame["c1"] == "a", frame["y"] * 0.8 + 0.1, rng.random(300))  # "a" is ranked perfectly

    slices = slice_metrics(config, frame, scores, None)

    assert set(slices) == {"c1=a", "c1=b", "c1=<missing>"}
    assert [slices[k]["rows"] for k in ("c1=a", "c1=b", "c1=<missing>")] == [100.0, 100.0, 100.0]
    assert slices["c1=a"]["roc_auc"] == 1.0
    b = (frame["c1"] == "b").to_numpy()
    assert slices["c1=b"]["roc_auc"] == roc_auc_score(frame["y"][b], scores[b])


def test_a_small_holdout_is_comparable_when_most_of_it_is_new_to_both() -> None:
    from tasks.evaluate import comparison_rows_needed

    assert comparison_rows_needed(100, 336) == 100  # hourly: the configured minimum
    assert comparison_rows_needed(100, 61) == 31  # daily, two months: half of it
    assert comparison_rows_needed(100, 1) == 1
    assert comparison_rows_needed(100, 0) == 1  # nothing to compare on is never comparable
