"""Drift measured by the real Evidently on synthetic frames, performance on labels, and the stores."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import f1_score, roc_auc_score

from tasks import drift
from tasks.alerts import last_alert_at, record_alert
from tasks.drift import ALL_NULL_METHOD, drift_report, performance_check
from tasks.drift_policy import decide_drift
from tasks.drift_summary import save_report_html, summary_markdown
from tasks.settings import TrainingConfig
from tasks.stores import DataStore

ROWS = 2000
MONITORING = {
    "min_rows": 200,
    "column_threshold": 0.1,
    "drifted_share": 0.3,
    "prediction_threshold": 0.2,
    "min_labelled_rows": 300,
}


def frame(
    rows: int = ROWS,
    seed: int = 0,
    x1_shift: float = 0.0,
    c1_p: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3),
    prediction: str | None = None,
) -> pd.DataFrame:
    """Features of the conftest config (x1, x2 numeric; c1 categorical), optionally a prediction."""
    rng = np.random.default_rng(seed)
    out = pd.DataFrame(
        {
            "x1": rng.uniform(0, 10, rows) + x1_shift,
            "x2": rng.normal(0, 1, rows),
            "c1": rng.choice(["a", "b", "c"], rows, p=list(c1_p)),
        }
    )
    if prediction == "stable":
        out["prediction"] = rng.beta(2, 5, rows)
    elif prediction == "shifted":
        out["prediction"] = rng.beta(5, 2, rows)
    return out


@pytest.fixture
def config(make_config: Callable[..., TrainingConfig]) -> TrainingConfig:
    return make_config("binary", monitoring=MONITORING)


def by_name(result: drift.DriftResult) -> dict[str, drift.ColumnDrift]:
    return {c.column: c for c in result.columns}


def test_shifted_numeric_and_category_are_flagged_with_distances(config):
    reference = frame(seed=1)
    current = frame(seed=2, x1_shift=3.0, c1_p=(0.7, 0.15, 0.15))
    result, snapshot = drift_report(reference, current, config)
    cols = by_name(result)

    assert [c.column for c in result.columns] == ["x1", "x2", "c1"]  # features only, config order
    assert (cols["x1"].method, cols["x2"].method, cols["c1"].method) == ("wasserstein", "wasserstein", "jensenshannon")
    assert [c.column for c in result.columns if c.drifted] == ["x1", "c1"]
    # The score is the normed Wasserstein distance of *this* column (not a p-value, not another column).
    expected = stats.wasserstein_distance(reference["x1"], current["x1"]) / np.std(reference["x1"])
    assert cols["x1"].score == pytest.approx(expected, rel=1e-9)
    assert 0.1 < cols["c1"].score < 1.0
    assert cols["x2"].score < 0.1
    assert all(c.threshold == 0.1 for c in result.columns)
    assert result.drifted_share == pytest.approx(2 / 3)
    assert (result.rows_current, result.rows_reference) == (ROWS, ROWS)
    assert result.prediction is None  # no prediction column in either frame
    assert snapshot is not None

    decision = decide_drift(result, config.monitoring, None, datetime(2024, 3, 1, tzinfo=UTC))
    assert decision.status == "drift"


def test_same_distribution_gives_no_drifted_columns(config):
    result, _ = drift_report(frame(seed=1), frame(seed=2), config)
    assert result.drifted_share == 0.0
    assert all(0.0 <= c.score < 0.1 for c in result.columns)
    assert not any(c.drifted for c in result.columns)
    assert decide_drift(result, config.monitoring, None, datetime(2024, 3, 1, tzinfo=UTC)).status == "no_drift"


def test_the_html_report_scores_equal_the_decisions_when_it_sees_every_row(make_config):
    """Our vectorised distances decide; Evidently draws the report. On the same rows they agree."""
    config = make_config("binary", monitoring={**MONITORING, "report_rows": 5000})
    reference = frame(seed=1, prediction="stable")
    current = frame(seed=2, x1_shift=0.4, c1_p=(0.5, 0.3, 0.2), prediction="shifted")
    result, snapshot = drift_report(reference, current, config)
    shown = drift.evidently_scores(snapshot.dict())
    ours = {c.column: c for c in [*result.columns, result.prediction, result.label] if c is not None}
    assert set(ours) == {"x1", "x2", "c1", "prediction"}
    for name, column in ours.items():
        method, score, threshold = shown[name]
        assert (column.method, column.threshold) == (method, threshold)
        assert column.score == pytest.approx(score, rel=1e-9), name
    assert result.report_rows is None


def test_past_report_rows_the_report_samples_and_the_decision_still_reads_every_row(make_config):
    whole = make_config("binary", monitoring={**MONITORING, "report_rows": 10_000})
    sampled = make_config("binary", monitoring={**MONITORING, "report_rows": 1000})
    reference, current = frame(rows=3000, seed=1), frame(rows=2500, seed=2, x1_shift=0.5)
    full, _ = drift_report(reference, current, whole)
    result, snapshot = drift_report(reference, current, sampled)

    assert result.report_rows == (1000, 1000)
    assert [c.score for c in result.columns] == [c.score for c in full.columns]  # not the sample's
    shown = drift.evidently_scores(snapshot.dict())
    assert shown["x1"][1] != pytest.approx(by_name(result)["x1"].score, rel=1e-6)  # Evidently saw fewer rows
    assert shown["x1"][1] == pytest.approx(by_name(result)["x1"].score, rel=0.25)  # but the same column's shift
    decision = decide_drift(result, sampled.monitoring, None, datetime(2024, 3, 1, tzinfo=UTC))
    text = summary_markdown(result, decision, "file:///r.html", "check")
    assert "uniform sample of 1000 current and 1000 reference rows" in text


def test_small_windows_still_use_distances_not_p_values(config):
    # Below 1000 rows Evidently's default would be KS / chi-square p-values.
    result, snapshot = drift_report(frame(rows=300, seed=1), frame(rows=300, seed=2, x1_shift=3.0), config)
    assert {c.column: c.method for c in result.columns} == {
        "x1": "wasserstein",
        "x2": "wasserstein",
        "c1": "jensenshannon",
    }
    assert by_name(result)["x1"].score > 0.5  # a p-value would be ~0 here; a distance is large
    configs = [m["config"] for m in snapshot.dict()["metrics"]]
    evidently_methods = {c["method"] for c in configs if c["type"].endswith(":ValueDrift")}
    assert evidently_methods == {"wasserstein", "jensenshannon"}


def test_empty_current_does_not_run_evidently_and_is_insufficient(config, monkeypatch):
    def boom(*_: Any, **__: Any) -> None:
        raise AssertionError("Evidently must not run on an empty window")

    monkeypatch.setattr(drift, "_run_evidently", boom)
    result, snapshot = drift_report(frame(seed=1), frame(seed=2).iloc[0:0], config)
    assert snapshot is None
    assert result.rows_current == 0
    assert result.rows_reference == ROWS
    assert result.columns == []
    decision = decide_drift(result, config.monitoring, None, datetime(2024, 3, 1, tzinfo=UTC))
    assert decision.status == "insufficient_data"
    assert decision.retrain is False


def test_empty_reference_is_an_error(config):
    with pytest.raises(ValueError, match="reference frame is empty"):
        drift_report(frame(seed=1).iloc[0:0], frame(seed=2), config)


def test_all_null_column_in_current_is_drifted_not_a_crash(config):
    current = frame(seed=2)
    current["x2"] = np.nan  # the feature stopped arriving
    current["c1"] = None
    result, snapshot = drift_report(frame(seed=1), current, config)
    cols = by_name(result)
    for name in ("x2", "c1"):
        assert (cols[name].method, cols[name].score, cols[name].drifted) == (ALL_NULL_METHOD, 1.0, True)
    assert cols["x1"].method == "wasserstein"  # the rest still goes through Evidently
    assert not cols["x1"].drifted
    assert result.drifted_share == pytest.approx(2 / 3)
    assert snapshot is not None


def test_column_null_on_both_sides_is_no_change_and_all_null_needs_no_evidently(config, monkeypatch):
    reference, current = frame(seed=1), frame(seed=2)
    reference["x2"] = np.nan
    current["x2"] = np.nan
    result, _ = drift_report(reference, current, config)
    assert (by_name(result)["x2"].score, by_name(result)["x2"].drifted) == (0.0, False)

    monkeypatch.setattr(drift, "_run_evidently", lambda *a, **k: pytest.fail("nothing left to compare"))
    empty_features = current.assign(x1=np.nan, x2=np.nan, c1=None)
    result, snapshot = drift_report(frame(seed=1), empty_features, config)
    assert snapshot is None
    assert result.drifted_share == 1.0  # every feature vanished from a reference that had them all
    assert {c.method for c in result.columns} == {ALL_NULL_METHOD}


def test_prediction_drift_has_its_own_threshold_and_is_not_a_feature(config):
    reference = frame(seed=1, prediction="stable")
    stable, _ = drift_report(reference, frame(seed=2, prediction="stable"), config)
    shifted, snapshot = drift_report(reference, frame(seed=2, prediction="shifted"), config)

    assert stable.prediction is not None
    assert shifted.prediction is not None
    assert [c.column for c in shifted.columns] == ["x1", "x2", "c1"]
    assert shifted.prediction.method == "wasserstein"
    assert shifted.prediction.threshold == 0.2  # prediction_threshold, not column_threshold
    thresholds = {m["config"].get("column"): m["config"].get("threshold") for m in snapshot.dict()["metrics"]}
    assert thresholds["prediction"] == 0.2  # the HTML report judges it by the same threshold
    assert thresholds["x1"] == 0.1
    assert shifted.prediction.drifted
    assert shifted.prediction.score > 0.2
    assert not stable.prediction.drifted
    assert shifted.drifted_share == 0.0
    decision = decide_drift(shifted, config.monitoring, None, datetime(2024, 3, 1, tzinfo=UTC))
    assert decision.status == "drift"
    assert decision.reasons[0].startswith("prediction drift")


def test_multiclass_prediction_is_compared_as_a_category(make_config):
    config = make_config("multiclass", monitoring=MONITORING)
    rng = np.random.default_rng(3)
    reference = frame(seed=1).assign(prediction=rng.choice(["low", "mid", "high"], ROWS))
    current = frame(seed=2).assign(prediction=rng.choice(["low", "mid", "high"], ROWS, p=[0.8, 0.1, 0.1]))
    result, _ = drift_report(reference, current, config)
    assert result.prediction is not None
    assert result.prediction.method == "jensenshannon"
    assert result.prediction.drifted


def labelled(rows: int, noise: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, rows)
    prediction = np.clip(0.5 * y + 0.25 + rng.normal(0, noise, rows), 0, 1)
    return pd.DataFrame({"y": y.astype(float), "prediction": prediction})


def test_performance_check_binary_on_labelled_rows_only(config):
    scored = labelled(600, noise=0.4, seed=5)
    unlabelled = pd.DataFrame({"y": [np.nan] * 400, "prediction": [0.99] * 400})
    current = pd.concat([scored, unlabelled], ignore_index=True)

    check = performance_check(current, config, reference_value=0.95)
    assert check is not None
    expected_auc = roc_auc_score(scored["y"], scored["prediction"])
    assert check.metric == "roc_auc"
    assert check.labelled_rows == 600
    assert check.current_value == pytest.approx(expected_auc)
    assert check.drop == pytest.approx(0.95 - expected_auc)
    assert check.drop > 0  # current AUC is lower: worse is positive
    assert performance_check(labelled(600, noise=0.01, seed=5), config, reference_value=0.8).drop < 0


def test_a_performance_drop_fires_only_when_its_lower_bound_passes_the_allowance(config):
    """Over whole days of labelled rows: a small drop inside the noise is a note, a large one a signal."""
    scored = labelled(1400, noise=0.45, seed=9)
    scored["ts"] = pd.date_range("2024-03-01", periods=1400, freq="30min", tz="UTC")  # 29 days
    auc = roc_auc_score(scored["y"], scored["prediction"])
    allowance = config.monitoring.max_performance_drop
    near = performance_check(scored, config, reference_value=auc + allowance + 0.005)
    far = performance_check(scored, config, reference_value=auc + allowance + 0.15)
    assert near is not None
    assert far is not None
    assert near.drop_low < near.drop  # the bound sits below the point drop
    assert near.drop > allowance
    assert near.drop_low < allowance  # 0.005 past the allowance is inside the noise of 1,400 rows
    assert far.drop_low > allowance
    decide = {
        name: decide_drift(
            drift.DriftResult(1400, 1400, [], 0.0, performance=check, min_drifted=1),
            config.monitoring,
            None,
            datetime(2024, 4, 1, tzinfo=UTC),
        )
        for name, check in (("near", near), ("far", far))
    }
    assert decide["near"].fired == ()
    assert decide["far"].fired == ("performance",)
    assert "beyond noise" in decide["far"].reasons[0]
    no_days = performance_check(scored.drop(columns="ts"), config, reference_value=auc + 0.1)
    assert no_days is not None
    assert math.isnan(no_days.drop_low)  # without timestamps: the point drop decides


def test_performance_check_needs_enough_labels(config):
    current = labelled(299, noise=0.1, seed=6)  # min_labelled_rows is 300
    assert performance_check(current, config, reference_value=0.9) is None
    with_blanks = pd.concat([current, pd.DataFrame({"y": [np.nan] * 50, "prediction": [0.5] * 50})])
    assert performance_check(with_blanks, config, reference_value=0.9) is None
    assert performance_check(current.drop(columns="y"), config, reference_value=0.9) is None


def test_performance_drop_is_positive_when_a_lower_is_better_metric_rises(make_config):
    config = make_config("regression", monitoring=MONITORING)  # gate metric: rmse
    rng = np.random.default_rng(7)
    y = rng.normal(0, 1, 400)
    current = pd.DataFrame({"y": y, "prediction": y + rng.normal(0, 2.0, 400)})
    check = performance_check(current, config, reference_value=1.0)
    assert check is not None
    assert check.current_value == pytest.approx(math.sqrt(np.mean((current["prediction"] - y) ** 2)))
    assert check.drop == pytest.approx(check.current_value - 1.0)
    assert check.drop > 0


def test_performance_check_multiclass_uses_predicted_labels(make_config):
    config = make_config("multiclass", monitoring=MONITORING)  # gate metric: f1_macro
    rng = np.random.default_rng(8)
    y = rng.choice(["low", "mid", "high"], 400)
    predicted = np.where(rng.random(400) < 0.7, y, "low")
    check = performance_check(pd.DataFrame({"y": y, "prediction": predicted}), config, reference_value=0.9)
    assert check is not None
    assert check.current_value == pytest.approx(f1_score(y, predicted, average="macro"))
    assert check.drop == pytest.approx(0.9 - check.current_value)


def test_save_report_html_writes_through_the_store(config, tmp_path):
    store = DataStore(tmp_path.as_uri())
    _, snapshot = drift_report(frame(rows=300, seed=1), frame(rows=300, seed=2, x1_shift=3.0), config)
    path = save_report_html(snapshot, store, "synthetic", "drift-2024-03-01")
    assert path.endswith("reports/synthetic/drift-2024-03-01.html")
    data = store.read_bytes(path)
    assert len(data) > 10_000
    assert b"<html" in data[:2000].lower()
    assert store.find("reports", "synthetic", ".html") == [path]


def test_alert_history_round_trip_returns_the_newest(tmp_path):
    store = DataStore(tmp_path.as_uri())
    assert last_alert_at(store, "synthetic", "m") is None

    newer = datetime(2024, 3, 5, 8, 0, tzinfo=UTC)
    older = newer - timedelta(days=2)
    first = record_alert(store, "synthetic", "m", newer, {"reasons": ["feature drift"], "share": math.nan})
    record_alert(store, "synthetic", "m", older, {"reasons": ["prediction drift"]})  # written later, older
    record_alert(store, "synthetic", "other-model", newer + timedelta(days=9), {})  # another model: ignored

    assert last_alert_at(store, "synthetic", "m") == newer
    assert "/monitoring/synthetic/alerts/m/20240305T080000+0000-" in first
    body = json.loads(store.read_bytes(first))
    assert body["as_of"] == newer.isoformat()
    assert body["payload"] == {"reasons": ["feature drift"], "share": None}


def test_last_alert_trusts_the_content_not_the_file_name(tmp_path):
    store = DataStore(tmp_path.as_uri())
    real = datetime(2024, 3, 5, 8, 0, tzinfo=UTC)
    record_alert(store, "synthetic", "m", real, {})
    # A name that sorts last but records an older alert, and a corrupt file: neither may win or crash.
    misleading = {"as_of": (real - timedelta(days=30)).isoformat(), "payload": {}}
    store.put("monitoring", "synthetic", "alerts/m/99991231T000000+0000-zzzz.json", json.dumps(misleading).encode())
    store.put("monitoring", "synthetic", "alerts/m/99991231T000001+0000-bad.json", b"{not json")
    assert last_alert_at(store, "synthetic", "m") == real


def test_record_alert_refuses_naive_times(tmp_path):
    with pytest.raises(ValueError, match="timezone-aware"):
        record_alert(DataStore(tmp_path.as_uri()), "synthetic", "m", datetime(2024, 3, 5, 8), {})
