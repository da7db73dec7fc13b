"""Fairness metrics and the gate's fairness bound, on synthetic models whose bias is known."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from tasks.fairness import fairness_report
from tasks.gate import MetricReport, decide
from tasks.settings import FairnessConfig, GateConfig

RULES = FairnessConfig(sensitive="group", threshold=0.5, min_group_rows=50, bounds={"equalized_odds_difference": 0.1})
GATE = GateConfig(metric="roc_auc", min_metric=None, min_improvement=0.0)


def population(seed: int = 0, rows: int = 4000) -> tuple[pd.Series, np.ndarray]:
    """Two groups with the same base rate: any gap in treatment comes from the model."""
    rng = np.random.default_rng(seed)
    group = pd.Series(rng.choice(["a", "b"], size=rows))
    return group, (rng.random(rows) < 0.3).astype(int)


def fair_scores(y: np.ndarray, seed: int = 1) -> np.ndarray:
    """Informative and blind to the group: the same noise around the label for everyone."""
    return np.clip(0.25 + 0.5 * y + np.random.default_rng(seed).normal(0, 0.2, len(y)), 0, 1)


def biased_scores(group: pd.Series, y: np.ndarray) -> np.ndarray:
    """The same model, but every row of group b is pushed over the threshold, late or not."""
    return np.where(group.to_numpy() == "b", np.maximum(fair_scores(y), 0.8), fair_scores(y))


def test_a_group_blind_model_has_near_zero_gaps() -> None:
    group, y = population()
    report = fairness_report("binary", RULES, group, y, fair_scores(y))
    assert report.metrics["demographic_parity_difference"] < 0.05
    assert report.metrics["equalized_odds_difference"] < 0.05
    assert set(report.groups) == {"a", "b"}


def test_the_biased_model_shows_the_gap_it_was_built_with() -> None:
    group, y = population()
    report = fairness_report("binary", RULES, group, y, biased_scores(group, y))
    # group b: every row predicted positive, so its false-positive rate is 1; group a's is small
    assert report.groups["b"]["false_positive_rate"] == 1.0
    assert report.groups["a"]["false_positive_rate"] < 0.2
    assert report.metrics["equalized_odds_difference"] == pytest.approx(1.0 - report.groups["a"]["false_positive_rate"])
    assert report.metrics["demographic_parity_difference"] > 0.5


def gate_with(scores: np.ndarray, group: pd.Series, y: np.ndarray, champion: MetricReport | None = None):
    challenger = MetricReport(overall={"roc_auc": 0.8}, fairness=fairness_report("binary", RULES, group, y, scores))
    return decide("roc_auc", True, GATE, challenger, champion, "1" if champion else None, None, RULES.bounds)


def test_the_fairness_bound_rejects_the_biased_model_and_accepts_the_fair_one() -> None:
    group, y = population()
    fair, biased = gate_with(fair_scores(y), group, y), gate_with(biased_scores(group, y), group, y)

    assert fair.passed
    assert not biased.passed
    assert biased.violations == [next(v for v in biased.violations if v.startswith("fairness equalized_odds"))]
    assert "allowed <= 0.1" in biased.violations[0]


def test_the_fairness_bound_holds_even_when_the_challenger_beats_the_champion() -> None:
    group, y = population()
    champion = MetricReport(overall={"roc_auc": 0.6})
    report = gate_with(biased_scores(group, y), group, y, champion)
    rules = {c.rule: c.passed for c in report.checks}
    assert rules["beats champion"] is True
    assert rules["fairness equalized_odds_difference"] is False
    assert not report.passed


def test_small_groups_are_excluded_and_one_measurable_group_never_passes() -> None:
    group, y = population(rows=2000)
    group = group.where(group == "a", "tiny").mask(pd.Series(range(len(group))) > 30, "a")
    report = fairness_report("binary", RULES, group, y, fair_scores(y))
    assert report.excluded == ["tiny"]
    assert math.isnan(report.metrics["equalized_odds_difference"])
    challenger = MetricReport(overall={"roc_auc": 0.8}, fairness=report)
    verdict = decide("roc_auc", True, GATE, challenger, None, fairness_bounds=RULES.bounds)
    assert not verdict.passed
    assert "not measurable" in verdict.violations[0]


def test_an_unmeasured_fairness_report_fails_a_bounded_gate() -> None:
    verdict = decide("roc_auc", True, GATE, MetricReport(overall={"roc_auc": 0.8}), None, fairness_bounds={"x": 0.1})
    assert not verdict.passed
    assert verdict.violations == ["fairness x: fairness was not measured on this holdout"]


def test_regression_analogue_measures_the_mean_prediction_and_error_gaps() -> None:
    group = pd.Series(["a"] * 100 + ["b"] * 100)
    y = np.zeros(200)
    scores = np.r_[np.zeros(100), np.full(100, 2.0)]  # group b predicted 2 higher, and so 2 worse
    rules = FairnessConfig(sensitive="group", min_group_rows=10)
    report = fairness_report("regression", rules, group, y, scores)
    assert report.metrics == {"mean_prediction_difference": 2.0, "mae_difference": 2.0}


def test_multiclass_compares_predicted_class_shares_and_accuracy() -> None:
    group = pd.Series(["a"] * 100 + ["b"] * 100)
    classes = ["x", "y"]
    y = np.array(["x"] * 200)
    scores = np.r_[np.tile([0.9, 0.1], (100, 1)), np.tile([0.1, 0.9], (100, 1))]  # b always predicted y
    rules = FairnessConfig(sensitive="group", min_group_rows=10)
    report = fairness_report("multiclass", rules, group, y, scores, classes)
    assert report.metrics == {"demographic_parity_difference": 1.0, "accuracy_difference": 1.0}


def test_missing_values_form_their_own_group() -> None:
    group = pd.Series(["a"] * 100 + [None] * 100)
    y = np.r_[np.zeros(100), np.ones(100)].astype(int)
    report = fairness_report("binary", RULES, group, y, np.full(200, 0.9))
    assert set(report.groups) == {"a", "<missing>"}
