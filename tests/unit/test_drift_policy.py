"""The drift policy on hand-built results: pure, no data, no Evidently."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from pydantic import ValidationError

from tasks.drift import ColumnDrift, DriftResult, PerformanceCheck, is_drifted
from tasks.drift_policy import DriftDecision, decide_drift
from tasks.drift_summary import summary_markdown
from tasks.settings import MonitoringConfig, load_config

NOW = datetime(2024, 3, 10, 12, 0, tzinfo=UTC)
POLICY = MonitoringConfig.model_validate(
    {
        "min_rows": 500,
        "column_threshold": 0.1,
        "drifted_share": 0.3,
        "prediction_threshold": 0.1,
        "max_performance_drop": 0.03,
        "cooldown_hours": 24,
    }
)


def col(name: str, score: float, threshold: float = 0.1, method: str = "wasserstein") -> ColumnDrift:
    """A column whose flag agrees with its score, as drift_report builds them."""
    return ColumnDrift(name, method, score, threshold, drifted=score >= threshold)


def result(
    scores: list[float],
    rows: int = 1000,
    prediction: float | None = None,
    drop: float | None = None,
) -> DriftResult:
    columns = [col(f"f{i}", s) for i, s in enumerate(scores)]
    share = sum(c.drifted for c in columns) / len(columns) if columns else math.nan
    performance = None
    if drop is not None:
        performance = PerformanceCheck("roc_auc", 0.80, 0.80 - drop, drop, labelled_rows=800)
    return DriftResult(
        rows_current=rows,
        rows_reference=5000,
        columns=columns,
        drifted_share=share,
        prediction=None if prediction is None else col("prediction", prediction),
        performance=performance,
    )


QUIET = [0.01, 0.02, 0.05, 0.03]  # 4 features, none drifted


def test_importing_the_module_does_not_import_evidently():
    # Evidently takes seconds to import; a fresh interpreter shows the monitoring modules defer it.
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, tasks.drift, tasks.drift_policy, tasks.drift_summary, tasks.alerts;"
            "print('evidently' in sys.modules)",
        ],
        capture_output=True,
        cwd=Path(__file__).parents[2],
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "False"


def test_quiet_data_is_no_drift_and_says_why():
    decision = decide_drift(result(QUIET, prediction=0.02, drop=0.01), POLICY, None, NOW)
    assert decision == DriftDecision("no_drift", retrain=False, reasons=decision.reasons)
    text = " ".join(decision.reasons)
    assert "0/4 features drifted" in text
    assert "prediction" in text
    assert "drop 0.0100" in text


def test_drift_by_share_of_features():
    # 2 of 4 drifted = 0.5 >= 0.3; the prediction and performance are fine.
    decision = decide_drift(result([0.5, 0.2, 0.01, 0.02], prediction=0.01, drop=0.0), POLICY, None, NOW)
    assert decision.status == "drift"
    assert decision.retrain is True
    assert len(decision.reasons) == 1
    assert "feature drift" in decision.reasons[0]
    assert "f0 0.500" in decision.reasons[0]
    assert "f1 0.200" in decision.reasons[0]


def test_share_exactly_at_the_threshold_drifts_and_just_below_does_not():
    policy = POLICY.model_copy(update={"drifted_share": 0.5})
    assert decide_drift(result([0.5, 0.5, 0.0, 0.0]), policy, None, NOW).status == "drift"
    assert decide_drift(result([0.5, 0.0, 0.0, 0.0]), policy, None, NOW).status == "no_drift"


def test_one_drifted_feature_below_the_share_is_not_drift():
    decision = decide_drift(result([0.9, 0.0, 0.0, 0.0]), POLICY, None, NOW)  # 0.25 < 0.3
    assert decision.status == "no_drift"
    assert "1/4 features drifted" in decision.reasons[0]


def test_drift_by_prediction_only():
    decision = decide_drift(result(QUIET, prediction=0.25, drop=0.0), POLICY, None, NOW)
    assert decision.status == "drift"
    assert decision.retrain is True
    assert len(decision.reasons) == 1
    assert decision.reasons[0].startswith("prediction drift")
    assert "0.250" in decision.reasons[0]


def test_prediction_score_at_threshold_drifts():
    assert decide_drift(result(QUIET, prediction=0.1), POLICY, None, NOW).status == "drift"
    assert decide_drift(result(QUIET, prediction=0.0999), POLICY, None, NOW).status == "no_drift"


def test_drift_by_performance_only():
    decision = decide_drift(result(QUIET, prediction=0.01, drop=0.05), POLICY, None, NOW)
    assert decision.status == "drift"
    assert len(decision.reasons) == 1
    assert decision.reasons[0].startswith("performance drop")
    assert "roc_auc" in decision.reasons[0]


def test_performance_drop_equal_to_the_allowance_is_allowed():
    assert decide_drift(result(QUIET, drop=0.03), POLICY, None, NOW).status == "no_drift"
    assert decide_drift(result(QUIET, drop=0.0301), POLICY, None, NOW).status == "drift"


def test_a_better_current_metric_is_never_a_drop():
    assert decide_drift(result(QUIET, drop=-0.2), POLICY, None, NOW).status == "no_drift"


def test_all_signals_are_gathered_at_once():
    decision = decide_drift(result([0.9, 0.8, 0.7, 0.0], prediction=0.4, drop=0.1), POLICY, None, NOW)
    assert decision.status == "drift"
    assert [r.split(":")[0] for r in decision.reasons] == ["feature drift", "prediction drift", "performance drop"]
    assert decision.fired == ("features", "prediction", "performance")


def test_a_calibrated_result_brings_its_own_rules_one_feature_far_past_chance_drifts_alone():
    """min_drifted and alone_ratio in the result win over the policy's share (they came from the null)."""
    one = dataclasses.replace(result([0.25, 0.0, 0.0, 0.0]), min_drifted=3, alone_ratio=2.0)
    decision = decide_drift(one, POLICY, None, NOW)
    assert decision.status == "drift"
    assert decision.fired == ("features",)
    assert "f0 0.250 (2.5x the threshold 0.100), past 2.0x its threshold" in decision.reasons[0]
    near = dataclasses.replace(one, columns=[col("f0", 0.19), *one.columns[1:]])
    assert decide_drift(near, POLICY, None, NOW).status == "no_drift"  # 1.9x: one of three needed
    two = dataclasses.replace(near, columns=[col("f0", 0.19), col("f1", 0.15), col("f2", 0.12), col("f3", 0.0)])
    assert decide_drift(two, POLICY, None, NOW).reasons[0].startswith("feature drift: 3/4 features drifted")
    flagged = dataclasses.replace(
        near,
        columns=[
            *near.columns[:3],
            dataclasses.replace(col("f3", 0.0), quality=("null rate changed by 0.300 >= 0.020",)),
        ],
    )
    assert (
        "f3 (null rate changed by 0.300 >= 0.020)"
        in decide_drift(dataclasses.replace(flagged, min_drifted=2), POLICY, None, NOW).reasons[0]
    )


@pytest.mark.parametrize("rows", [0, POLICY.min_rows - 1])
def test_insufficient_data_wins_over_huge_scores(rows):
    decision = decide_drift(result([1.0, 1.0, 1.0, 1.0], rows=rows, prediction=1.0, drop=0.5), POLICY, None, NOW)
    assert decision.status == "insufficient_data"
    assert decision.retrain is False
    assert decision.reasons == [f"insufficient data: {rows} current rows, at least {POLICY.min_rows} needed"]


def test_min_rows_exactly_is_enough():
    assert decide_drift(result(QUIET, rows=POLICY.min_rows), POLICY, None, NOW).status == "no_drift"


def test_empty_result_is_insufficient_never_no_drift():
    empty = DriftResult(rows_current=0, rows_reference=5000, columns=[], drifted_share=math.nan)
    assert decide_drift(empty, POLICY, None, NOW).status == "insufficient_data"


def test_cooldown_blocks_a_second_alert_inside_the_window():
    drifting = result([0.9, 0.9, 0.0, 0.0])
    last = NOW - timedelta(hours=23, minutes=59)
    decision = decide_drift(drifting, POLICY, last, NOW)
    assert decision.status == "cooldown"
    assert decision.retrain is False
    assert decision.reasons[0].startswith("feature drift")  # the signals are still reported
    ends = last + timedelta(hours=24)
    assert f"no retraining before {ends.isoformat()}" in decision.reasons[-1]


def test_cooldown_ends_exactly_at_its_boundary():
    drifting = result([0.9, 0.9, 0.0, 0.0])
    at_end = decide_drift(drifting, POLICY, NOW - timedelta(hours=24), NOW)
    assert at_end.status == "drift"
    assert at_end.retrain is True
    just_before = decide_drift(drifting, POLICY, NOW - timedelta(hours=24) + timedelta(seconds=1), NOW)
    assert just_before.status == "cooldown"


def test_cooldown_does_not_turn_quiet_data_into_an_alert():
    decision = decide_drift(result(QUIET), POLICY, NOW - timedelta(hours=1), NOW)
    assert decision.status == "no_drift"


def test_cooldown_of_zero_hours_never_blocks():
    policy = POLICY.model_copy(update={"cooldown_hours": 0.0})
    assert decide_drift(result([0.9, 0.9, 0.0, 0.0]), policy, NOW, NOW).status == "drift"


def test_cooldown_compares_instants_across_timezones():
    paris = timezone(timedelta(hours=1))
    # 12:30 in Paris is 11:30 UTC: 30 minutes before NOW, well inside the window.
    last = datetime(2024, 3, 10, 12, 30, tzinfo=paris)
    assert decide_drift(result([0.9, 0.9, 0.0, 0.0]), POLICY, last, NOW).status == "cooldown"


def test_naive_datetimes_are_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        decide_drift(result(QUIET), POLICY, None, datetime(2024, 3, 10, 12))
    with pytest.raises(ValueError, match="timezone-aware"):
        decide_drift(result(QUIET), POLICY, datetime(2024, 3, 10, 11), NOW)


def test_nan_feature_score_counts_as_drifted_even_if_its_flag_says_otherwise():
    broken = ColumnDrift("f0", "wasserstein", math.nan, 0.1, drifted=False)
    assert is_drifted(broken)
    columns = [broken, col("f1", 0.0), col("f2", 0.0)]  # 1/3 = 0.33 >= 0.3 once the NaN counts
    stale = DriftResult(1000, 5000, columns, drifted_share=0.0)  # the stored share missed it
    decision = decide_drift(stale, POLICY, None, NOW)
    assert decision.status == "drift"
    assert "1/3 features drifted" in decision.reasons[0]


def test_nan_prediction_score_triggers():
    nan_prediction = ColumnDrift("prediction", "wasserstein", math.nan, 0.1, drifted=False)
    quiet = result(QUIET)
    decision = decide_drift(
        DriftResult(quiet.rows_current, quiet.rows_reference, quiet.columns, 0.0, prediction=nan_prediction),
        POLICY,
        None,
        NOW,
    )
    assert decision.status == "drift"
    assert decision.reasons[0].startswith("prediction drift")


def test_nan_performance_is_reported_as_not_measurable_not_as_fine():
    nan_perf = PerformanceCheck("roc_auc", 0.8, math.nan, math.nan, labelled_rows=900)
    quiet = result(QUIET)
    decision = decide_drift(
        DriftResult(quiet.rows_current, quiet.rows_reference, quiet.columns, 0.0, performance=nan_perf),
        POLICY,
        None,
        NOW,
    )
    assert decision.status == "no_drift"
    assert any("not measurable" in r for r in decision.reasons)


def test_to_dict_is_strict_json_and_metrics_are_flat_floats():
    nan_perf = PerformanceCheck("roc_auc", 0.8, math.nan, math.nan, labelled_rows=900)
    base = result([0.5, 0.01], prediction=0.2)
    res = DriftResult(
        base.rows_current, base.rows_reference, [*base.columns, col("odd|name", 0.0)], 1 / 3, base.prediction, nan_perf
    )
    data = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    assert data["columns"][0] == {
        "column": "f0",
        "method": "wasserstein",
        "score": 0.5,
        "threshold": 0.1,
        "drifted": True,
        "quality": [],
    }
    assert data["performance"]["drop"] is None
    metrics = res.metrics()
    assert all(isinstance(v, float) for v in metrics.values())
    assert metrics["drift_f0"] == 0.5
    assert metrics["prediction_drift"] == 0.2
    assert metrics["rows_current"] == 1000.0
    assert metrics["drifted_columns"] == 1.0
    assert "drift_odd_name" in metrics  # sanitised for MLflow
    assert math.isnan(metrics["performance_drop"])


def test_summary_markdown_shows_decision_drifted_columns_and_link():
    res = result([0.5, 0.01, 0.3], prediction=0.02, drop=0.01)
    decision = decide_drift(res, POLICY, None, NOW)
    text = summary_markdown(res, decision, "file:///tmp/r.html", "Drift check: flights")
    assert text.startswith("# Drift check: flights")
    assert "**DRIFT: retraining triggered**" in text
    assert "| f0 | wasserstein | 0.5000 | 0.100 | 5.00 | yes |  |" in text
    assert "| f1 | wasserstein | 0.0100 | 0.100 | 0.10 | no |  |" in text
    assert text.index("| f0 ") < text.index("| f2 ") < text.index("| f1 ")  # ranked by score
    assert "[file:///tmp/r.html](file:///tmp/r.html)" in text
    assert "Prediction drift: wasserstein 0.020 (0.2x the threshold 0.100), stable." in text
    assert "roc_auc 0.7900" in text
    for reason in decision.reasons:
        assert f"- {reason}" in text


def test_summary_markdown_without_report_or_columns():
    empty = DriftResult(0, 10, [], math.nan)
    decision = decide_drift(empty, POLICY, None, NOW)
    text = summary_markdown(empty, decision, None, "t")
    assert "**Insufficient data: no conclusion**" in text
    assert "Report: none" in text
    assert "| column |" not in text


def test_monitoring_defaults():
    policy = MonitoringConfig.model_validate({})
    assert policy.min_rows == 500
    # no distance is fixed: each model's thresholds come from its own reference (tasks/drift_null.py)
    assert (policy.column_threshold, policy.drifted_share, policy.prediction_threshold) == (None, None, None)
    assert (policy.false_alarm_rate, policy.null_draws, policy.min_rate_change) == (0.05, 400, 0.01)
    assert policy.max_performance_drop == 0.03
    assert policy.cooldown_hours == 24.0


@pytest.mark.parametrize(
    "bad",
    [
        {"drifted_share": 0},
        {"drifted_share": 1.1},
        {"column_threshold": 0},
        {"prediction_threshold": 1.5},
        {"false_alarm_rate": 0},
        {"false_alarm_rate": 0.5},
        {"null_draws": 10},
        {"min_rows": 0},
        {"cooldown_hours": -1},
        {"max_performance_drop": -0.01},
        {"unknown_key": 1},
    ],
)
def test_monitoring_bounds_are_enforced(bad):
    with pytest.raises(ValidationError):
        MonitoringConfig.model_validate(bad)


def test_flights_config_policy():
    policy = load_config(Path(__file__).parents[2] / "configs" / "flights.yaml").monitoring
    assert policy.min_rows == 1000
    assert policy.cooldown_hours == 72
    assert policy.min_labelled_rows == 1000
