"""The pipeline fits and scores every task type; metrics are the gateable ones, NaN when undefined."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from tasks.model import build_pipeline, compute_metrics, features_and_target, model_classes, predict_scores
from tasks.settings import METRIC_DIRECTIONS

TASKS = ["binary", "multiclass", "regression"]
FAST = {"max_iter": 20}


def fitted(make_config, make_frame, task: str):
    config = make_config(task)
    features, target = features_and_target(config, make_frame(task, rows=300, seed=1))
    return config, build_pipeline(config, FAST).fit(features, target)


def test_features_and_target_keep_only_the_configured_columns(make_config, make_frame) -> None:
    config = make_config("binary")
    frame = make_frame("binary", rows=50)
    frame["y"] = frame["y"].astype(bool)
    features, target = features_and_target(config, frame)
    assert list(features.columns) == ["x1", "x2", "c1"]  # no timestamp, target or leakage column
    assert target.dtype == "int64"
    assert set(target) <= {0, 1}


@pytest.mark.parametrize("task", TASKS)
def test_pipeline_fits_and_scores_with_the_right_shape(make_config, make_frame, task: str) -> None:
    config, model = fitted(make_config, make_frame, task)
    features, target = features_and_target(config, make_frame(task, rows=80, seed=2))
    scores = predict_scores(model, features, config.task)
    if task == "binary":
        assert scores.shape == (80,)
        assert ((scores >= 0) & (scores <= 1)).all()
    elif task == "multiclass":
        assert scores.shape == (80, 3)
        np.testing.assert_allclose(scores.sum(axis=1), 1.0)
        assert model_classes(model) == sorted(set(target))
    else:
        assert scores.shape == (80,)
        assert scores.dtype == float
    assert np.isfinite(scores).all()


@pytest.mark.parametrize(
    ("task", "metric", "good"),
    [("binary", "roc_auc", 0.85), ("multiclass", "f1_macro", 0.6), ("regression", "r2", 0.7)],
)
def test_pipeline_learns_the_signal(make_config, make_frame, task: str, metric: str, good: float) -> None:
    config, model = fitted(make_config, make_frame, task)
    features, target = features_and_target(config, make_frame(task, rows=300, seed=3))
    scores = predict_scores(model, features, config.task)
    assert compute_metrics(config.task, target, scores, model_classes(model))[metric] > good


def test_the_categorical_feature_is_used(make_config, make_frame) -> None:
    _, model = fitted(make_config, make_frame, "regression")
    row = pd.DataFrame({"x1": [5.0, 5.0], "x2": [0.0, 0.0], "c1": ["a", "b"]})
    a, b = predict_scores(model, row, "regression")
    assert a - b > 3.0  # c1 == "a" adds 3 to the signal, 6 to the target


@pytest.mark.parametrize("task", TASKS)
def test_unseen_categories_and_missing_values_do_not_crash(make_config, make_frame, task: str) -> None:
    config, model = fitted(make_config, make_frame, task)
    odd = pd.DataFrame(
        {
            "x1": [np.nan, 3.0, np.nan, 100.0],
            "x2": [np.nan, np.nan, 0.5, -100.0],
            "c1": ["never-seen", None, np.nan, "a"],
        }
    )
    scores = predict_scores(model, odd, config.task)
    assert len(scores) == 4
    assert np.isfinite(scores).all()


@pytest.mark.parametrize("task", TASKS)
def test_compute_metrics_returns_every_gateable_metric(task: str) -> None:
    y, scores, classes = {
        "binary": (np.array([0, 1, 0, 1]), np.array([0.2, 0.7, 0.6, 0.4]), None),
        "multiclass": (np.array(["a", "b", "c", "a"]), np.full((4, 3), 1 / 3), ["a", "b", "c"]),
        "regression": (np.array([1.0, 2.0, 3.0]), np.array([1.5, 2.0, 2.0]), None),
    }[task]
    metrics = compute_metrics(task, y, scores, classes)
    assert set(metrics) == set(METRIC_DIRECTIONS[task])
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())


@pytest.mark.parametrize("task", TASKS)
def test_no_rows_gives_nan_for_every_metric(task: str) -> None:
    metrics = compute_metrics(task, np.array([]), np.array([]), ["a"])
    assert set(metrics) == set(METRIC_DIRECTIONS[task])
    assert all(math.isnan(v) for v in metrics.values())


def test_binary_metrics_have_the_known_values() -> None:
    metrics = compute_metrics("binary", np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    assert metrics["roc_auc"] == pytest.approx(0.75)
    assert metrics["accuracy"] == pytest.approx(0.75)  # threshold 0.5: predicts 0, 0, 0, 1
    assert metrics["f1"] == pytest.approx(2 / 3)
    assert metrics["brier"] == pytest.approx((0.01 + 0.16 + 0.4225 + 0.04) / 4)


@pytest.mark.parametrize("only", [0, 1])
def test_one_class_binary_gives_nan_ranking_metrics(only: int) -> None:
    y = np.full(5, only)
    metrics = compute_metrics("binary", y, np.array([0.1, 0.3, 0.5, 0.7, 0.9]))
    assert math.isnan(metrics["roc_auc"])
    assert math.isnan(metrics["average_precision"])
    for name in ("log_loss", "brier", "accuracy", "f1"):
        assert math.isfinite(metrics[name]), name


def test_perfect_binary_predictions() -> None:
    metrics = compute_metrics("binary", np.array([0, 1, 0, 1]), np.array([0.0, 1.0, 0.0, 1.0]))
    assert metrics["roc_auc"] == 1.0
    assert metrics["average_precision"] == 1.0
    assert metrics["accuracy"] == 1.0
    assert metrics["f1"] == 1.0
    assert metrics["brier"] == 0.0
    assert metrics["log_loss"] < 1e-6


def test_perfect_regression_predictions() -> None:
    y = np.array([1.0, -2.0, 3.5])
    metrics = compute_metrics("regression", y, y.copy())
    assert metrics == {"rmse": 0.0, "mae": 0.0, "r2": 1.0}


def test_regression_metrics_have_the_known_values() -> None:
    metrics = compute_metrics("regression", np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 2.0, 3.0, 6.0]))
    assert metrics["rmse"] == pytest.approx(1.0)  # sqrt(4 / 4)
    assert metrics["mae"] == pytest.approx(0.5)


def test_one_row_regression_has_no_r2() -> None:
    metrics = compute_metrics("regression", np.array([2.0]), np.array([2.5]))
    assert math.isnan(metrics["r2"])
    assert metrics["rmse"] == pytest.approx(0.5)


def test_multiclass_predictions_follow_the_models_class_order() -> None:
    # column 0 is class "mid", not the alphabetically first "high"
    scores = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])
    y = np.array(["mid", "high", "low"])
    right = compute_metrics("multiclass", y, scores, ["mid", "high", "low"])
    wrong = compute_metrics("multiclass", y, scores, ["high", "low", "mid"])
    assert right["accuracy"] == 1.0
    assert right["f1_macro"] == 1.0
    assert wrong["accuracy"] == 0.0
    assert right["log_loss"] == pytest.approx(-math.log(0.8))
    assert wrong["log_loss"] == pytest.approx(-math.log(0.1))


def test_multiclass_metrics_handle_a_class_absent_from_the_holdout() -> None:
    scores = np.array([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1]])
    metrics = compute_metrics("multiclass", np.array(["a", "b"]), scores, ["a", "b", "c"])
    assert metrics["accuracy"] == 1.0
    assert math.isfinite(metrics["log_loss"])


def test_multiclass_log_loss_is_nan_for_a_class_the_model_never_saw() -> None:
    scores = np.array([[0.7, 0.3], [0.2, 0.8], [0.5, 0.5]])
    metrics = compute_metrics("multiclass", np.array(["a", "b", "new"]), scores, ["a", "b"])
    assert math.isnan(metrics["log_loss"])
    assert metrics["accuracy"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_the_loaders_trusted_types_are_exactly_what_a_fitted_pipeline_holds(make_config, make_frame, task) -> None:  # type: ignore[no-untyped-def]
    """The list may neither lag behind the pipeline (models would not load) nor grow past it."""
    import skops.io

    from tasks.artifacts import SKOPS_TRUSTED_TYPES

    config = make_config(task)
    pipeline = build_pipeline(config, {"max_iter": 5}).fit(*features_and_target(config, make_frame(task)))

    assert sorted(skops.io.get_untrusted_types(data=skops.io.dumps(pipeline))) == sorted(SKOPS_TRUSTED_TYPES)


def test_a_partial_around_anything_else_is_still_untrusted() -> None:
    import functools
    import os

    import skops.io
    from sklearn.preprocessing import FunctionTransformer

    from tasks.artifacts import SKOPS_TRUSTED_TYPES

    hostile = FunctionTransformer(func=functools.partial(os.getcwd))
    untrusted = set(skops.io.get_untrusted_types(data=skops.io.dumps(hostile))) - set(SKOPS_TRUSTED_TYPES)

    assert untrusted == {f"{os.getcwd.__module__}.getcwd"}


@pytest.mark.parametrize("rows", [7, 400, 20_000])
def test_rank_auc_is_sklearns_roc_auc_with_ties_counted_a_half(rows: int) -> None:
    from sklearn.metrics import roc_auc_score

    from tasks.model import metric_value, rank_auc

    rng = np.random.default_rng(rows)
    y = np.r_[0, 1, rng.integers(0, 2, rows - 2)]
    scores = np.round(rng.uniform(size=rows) + 0.3 * y, 1)  # coarse: many ties
    assert rank_auc(y, scores) == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
    assert metric_value("binary", "roc_auc", y, scores) == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
    assert rank_auc(1 - y, scores) == pytest.approx(1 - roc_auc_score(y, scores), abs=1e-12)
