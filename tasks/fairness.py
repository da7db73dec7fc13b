"""Group fairness: how differently a model treats the groups of one sensitive attribute.

Pure: numbers in, a report out. Each metric is the largest gap between two measured groups,
so 0 is perfect parity and the gate can bound it (`fairness.bounds` in the config):
- binary, at the config's threshold on P(positive):
  - demographic-parity difference: the share of rows predicted positive;
  - equalized-odds difference: the larger of the true-positive-rate gap and the false-positive-rate gap;
- multiclass: the demographic-parity difference of the predicted-class shares (worst class), and the
  accuracy difference;
- regression (the analogue): the mean-prediction difference and the mean-absolute-error difference.

Groups with fewer rows than `min_group_rows` are listed as excluded, not measured: a rate over
a handful of rows is noise, and a bound on noise would reject models at random. A rate that is
undefined in a group (no positive rows, so no true-positive rate) is left out of that gap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tasks.settings import FAIRNESS_METRICS, FairnessConfig, TaskType

MISSING_GROUP = "<missing>"


@dataclass(frozen=True)
class FairnessReport:
    """One model's fairness on one holdout, across the groups of `attribute`."""

    attribute: str
    metrics: dict[str, float]  # metric -> largest gap between measured groups (NaN: fewer than two groups)
    groups: dict[str, dict[str, float]]  # group -> {"rows": n, per-group rates}
    excluded: list[str] = field(default_factory=list)  # groups below min_group_rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "attribute": self.attribute,
            "metrics": self.metrics,
            "groups": self.groups,
            "excluded": self.excluded,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FairnessReport:
        return cls(data["attribute"], dict(data["metrics"]), dict(data["groups"]), list(data.get("excluded", [])))


def _gap(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(max(finite) - min(finite)) if len(finite) >= 2 else math.nan


def _rate(mask: np.ndarray, among: np.ndarray) -> float:
    return float(mask[among].mean()) if among.any() else math.nan


def group_rates(
    task: TaskType, y: np.ndarray, scores: np.ndarray, classes: list[Any] | None, threshold: float
) -> dict[str, float]:
    """The per-group quantities the gaps are taken over."""
    if task == "binary":
        predicted = scores >= threshold
        positive = y == 1
        return {
            "selection_rate": float(predicted.mean()),
            "true_positive_rate": _rate(predicted, positive),
            "false_positive_rate": _rate(predicted, ~positive),
            "base_rate": float(positive.mean()),
        }
    if task == "multiclass":
        assert classes is not None, "multiclass fairness needs the model's classes"
        predicted_class = np.asarray(classes)[np.argmax(scores, axis=1)]
        rates = {f"share_{c}": float((predicted_class == c).mean()) for c in classes}
        return {**rates, "accuracy": float((predicted_class == y).mean())}
    return {"mean_prediction": float(np.mean(scores)), "mae": float(np.mean(np.abs(scores - y)))}


def gaps(task: TaskType, groups: dict[str, dict[str, float]], classes: list[Any] | None) -> dict[str, float]:
    """Each metric of the task type: the largest difference between two groups."""
    rows = list(groups.values())
    if task == "binary":
        return {
            "demographic_parity_difference": _gap([g["selection_rate"] for g in rows]),
            "equalized_odds_difference": max(
                (
                    gap
                    for gap in (
                        _gap([g["true_positive_rate"] for g in rows]),
                        _gap([g["false_positive_rate"] for g in rows]),
                    )
                    if math.isfinite(gap)
                ),
                default=math.nan,
            ),
        }
    if task == "multiclass":
        shares = [_gap([g[f"share_{c}"] for g in rows]) for c in classes or []]
        return {
            "demographic_parity_difference": max((s for s in shares if math.isfinite(s)), default=math.nan),
            "accuracy_difference": _gap([g["accuracy"] for g in rows]),
        }
    return {
        "mean_prediction_difference": _gap([g["mean_prediction"] for g in rows]),
        "mae_difference": _gap([g["mae"] for g in rows]),
    }


def fairness_report(
    task: TaskType,
    rules: FairnessConfig,
    sensitive: pd.Series,
    y_true: pd.Series | np.ndarray,
    scores: np.ndarray,
    classes: list[Any] | None = None,
) -> FairnessReport:
    """Per-group rates and the gaps between them, for the groups large enough to measure."""
    assert rules.sensitive is not None, "fairness needs a sensitive attribute"
    y, scores = np.asarray(y_true), np.asarray(scores)
    labels = sensitive.astype("object").where(sensitive.notna(), MISSING_GROUP).astype(str).to_numpy()
    groups: dict[str, dict[str, float]] = {}
    excluded: list[str] = []
    for group in sorted(set(labels)):
        index = labels == group
        if index.sum() < rules.min_group_rows:
            excluded.append(group)
            continue
        groups[group] = {
            "rows": float(index.sum()),
            **group_rates(task, y[index], scores[index], classes, rules.threshold),
        }
    metrics = gaps(task, groups, classes)
    assert set(metrics) == set(FAIRNESS_METRICS[task])
    return FairnessReport(rules.sensitive, metrics, groups, excluded)
