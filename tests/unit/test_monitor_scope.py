"""What a drift check compares: out-of-sample reference predictions, and the champion's own rows only."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from tasks.drift import drift_report, performance_check
from tasks.inference_log import CONFIDENCE, MODEL_VERSION, PREDICTION
from tasks.model import build_pipeline, features_and_target
from tasks.monitor import scored_by
from tasks.score import score_frame
from tasks.settings import TrainingConfig
from tasks.train import reference_sample

MONITORING = {
    "min_rows": 200,
    "column_threshold": 0.1,
    "drifted_share": 0.3,
    "prediction_threshold": 0.2,
    "min_labelled_rows": 200,
}


@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_reference_predictions_are_out_of_sample(
    task: str, make_config: Callable[..., TrainingConfig], make_frame: Callable[..., pd.DataFrame]
) -> None:
    """Predictions only on holdout rows (the model never saw them); the fit rows give features only."""
    config = make_config(task)
    window = make_frame(task, rows=600)
    fit_frame, holdout = window.iloc[:450], window.iloc[450:]
    pipeline = build_pipeline(config, {"max_iter": 10}).fit(*features_and_target(config, fit_frame))

    reference = reference_sample(config, pipeline, fit_frame, holdout)

    predicted = reference[reference[PREDICTION].notna()]
    assert len(reference) == len(window)  # small window: every row, features from both parts
    assert sorted(predicted["ts"]) == sorted(holdout["ts"])  # no fit row carries a prediction
    expected, confidence = score_frame(pipeline, predicted, config)
    assert predicted[PREDICTION].tolist() == expected.tolist()
    if task == "multiclass":
        assert predicted[CONFIDENCE].tolist() == pytest.approx(confidence.tolist())
    assert reference["ts"].is_monotonic_increasing


def _logged(make_frame: Callable[..., pd.DataFrame], version: str, seed: int, shifted: bool) -> pd.DataFrame:
    """Inference-log rows scored by `version`: a shifted version scores every row high, whatever its label."""
    rows = make_frame("binary", rows=600, seed=seed)
    rng = np.random.default_rng(seed)
    agree = np.where(rows["y"] == 1, rng.beta(5, 2, len(rows)), rng.beta(2, 5, len(rows)))
    rows[PREDICTION] = rng.beta(9, 1, len(rows)) if shifted else agree
    rows[MODEL_VERSION] = version
    return rows


def test_rows_an_earlier_version_scored_do_not_count_against_the_champion(
    make_config: Callable[..., TrainingConfig], make_frame: Callable[..., pd.DataFrame]
) -> None:
    config = make_config("binary", monitoring=MONITORING)
    reference = _logged(make_frame, "2", seed=1, shifted=False)
    current = pd.concat(
        [_logged(make_frame, "1", seed=2, shifted=True), _logged(make_frame, "2", seed=3, shifted=False)],
        ignore_index=True,
    )

    for_drift, for_performance = scored_by(current, "2", config.monitoring.min_rows)
    result, _ = drift_report(reference, for_drift, config)
    performance = performance_check(for_performance, config, reference_value=0.9)
    mixed, _ = drift_report(reference, current, config)

    assert result.rows_current == len(current)  # feature drift still reads every row
    assert result.prediction is not None
    assert not result.prediction.drifted
    assert mixed.prediction is not None
    assert mixed.prediction.drifted
    assert performance is not None
    assert performance.labelled_rows == 600
    assert performance.current_value > 0.8


def test_too_few_rows_of_the_champion_leave_prediction_drift_unmeasured(
    make_config: Callable[..., TrainingConfig], make_frame: Callable[..., pd.DataFrame]
) -> None:
    """Right after a promotion: the old version's rows are there, the new one's are not yet."""
    config = make_config("binary", monitoring=MONITORING)
    current = _logged(make_frame, "1", seed=2, shifted=True)

    for_drift, for_performance = scored_by(current, "2", config.monitoring.min_rows)
    result, _ = drift_report(_logged(make_frame, "2", seed=1, shifted=False), for_drift, config)

    assert result.prediction is None  # not measured: neither drifted nor fine
    assert performance_check(for_performance, config, reference_value=0.9) is None
    assert len(result.columns) == len(config.features.all)  # the features are still checked
