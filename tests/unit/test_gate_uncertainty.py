"""The gate weighs uncertainty: a slice drop inside its own sampling noise passes, a real one blocks."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from tasks.evaluate import gain_intervals
from tasks.gate import MetricReport, decide
from tasks.model import build_pipeline, features_and_target
from tasks.settings import GateConfig, TrainingConfig
from tasks.uncertainty import GainInterval, paired_gain_interval

RULES = GateConfig(metric="roc_auc", min_improvement=0.002, max_slice_regression=0.03, min_slice_rows=300)
ROWS = 1948  # the size of the slice the review saw rejected on a 0.032 drop


def scored(rows: int, skill: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels, and scores whose AUC is set by `skill` (0: chance), with noise of their own."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, rows)
    return y, y * skill + rng.normal(0, 1, rows)


def auc_of(y: np.ndarray, scores: np.ndarray) -> Callable[[np.ndarray], float]:
    """AUC on the rows at `index`; NaN with one class, as the gate's metric gives it."""
    return lambda index: float(roc_auc_score(y[index], scores[index])) if len(set(y[index])) == 2 else float("nan")


def interval(challenger_skill: float, champion_skill: float, seed: int = 0) -> GainInterval:
    y, champion = scored(ROWS, champion_skill, seed)
    challenger = y * challenger_skill + np.random.default_rng(seed + 1).normal(0, 1, ROWS)
    return paired_gain_interval(
        auc_of(y, challenger), auc_of(y, champion), np.arange(ROWS), True, 200, 0.95, np.random.default_rng(7)
    )


def test_two_equally_good_models_differ_within_an_interval_that_holds_zero() -> None:
    """Same skill, noise of their own: the observed gap is chance, and the interval says so (mostly)."""
    gains = [interval(0.5, 0.5, seed=seed) for seed in range(0, 20, 2)]
    assert all(g.measured for g in gains)
    assert sum(g.low < 0 < g.high for g in gains) >= 8  # a 95% interval: zero inside nearly always
    assert min(g.high - g.low for g in gains) > 0.03  # on ~2,000 rows, chance alone moves an AUC this much


def test_a_clearly_worse_model_has_an_interval_below_zero() -> None:
    gain = interval(0.2, 0.8)
    assert gain.high < 0


def test_lower_is_better_metrics_flip_the_sign() -> None:
    y = np.linspace(0, 1, 400)
    better, worse = y + 0.01, y + 0.5
    rmse = lambda s: lambda index: float(np.sqrt(np.mean((y[index] - s[index]) ** 2)))  # noqa: E731
    gain = paired_gain_interval(rmse(better), rmse(worse), np.arange(400), False, 100, 0.9, np.random.default_rng(0))
    assert gain.low > 0  # positive gain: the challenger's error is smaller


def test_too_few_measurable_resamples_give_no_interval() -> None:
    y = np.zeros(10, dtype=int)  # one class only: no resample has an AUC
    gain = paired_gain_interval(
        auc_of(y, np.arange(10.0)), auc_of(y, np.ones(10)), np.arange(10), True, 100, 0.95, np.random.default_rng(0)
    )
    assert not gain.measured
    assert "no interval" in gain.describe()


def slice_drop(drop: float, gain: GainInterval | None) -> tuple[bool, str]:
    """A challenger better overall whose B6 slice fell by `drop`, with the slice's interval `gain`."""
    challenger = MetricReport({"roc_auc": 0.70}, {"carrier=B6": {"rows": ROWS, "roc_auc": 0.594 - drop}})
    champion = MetricReport({"roc_auc": 0.69}, {"carrier=B6": {"rows": ROWS, "roc_auc": 0.594}})
    gains = {} if gain is None else {"carrier=B6": gain}
    report = decide("roc_auc", True, RULES, challenger, champion, champion_version="3", gains=gains)
    (check,) = [c for c in report.checks if c.rule == "slice carrier=B6"]
    return report.passed, check.detail


def test_a_noise_sized_slice_drop_passes_and_says_why() -> None:
    passed, detail = slice_drop(0.032, GainInterval(-0.071, 0.006, 0.95, 200))
    assert passed
    assert "within sampling noise, not blocking" in detail


def test_a_real_slice_drop_blocks() -> None:
    passed, detail = slice_drop(0.032, GainInterval(-0.06, -0.008, 0.95, 200))
    assert not passed
    assert "[-0.0600, -0.0080]" in detail


def test_without_an_interval_the_point_estimate_decides_as_before() -> None:
    assert not slice_drop(0.032, None)[0]
    assert not slice_drop(0.032, GainInterval(float("nan"), float("nan"), 0.95, 3))[0]  # unmeasured: no excuse
    assert slice_drop(0.02, GainInterval(-0.06, -0.01, 0.95, 200))[0]  # within the allowance: passes anyway


def test_noise_never_excuses_a_tie_or_a_loss_overall() -> None:
    wide = GainInterval(-0.05, 0.05, 0.95, 200)
    tie = decide(
        "roc_auc",
        True,
        RULES,
        MetricReport({"roc_auc": 0.69}),
        MetricReport({"roc_auc": 0.69}),
        gains={"overall": wide},
    )
    assert not tie.passed
    assert tie.gain == wide
    assert "interval of the gain [-0.0500, +0.0500]" in tie.checks[-1].detail


def test_gain_intervals_cover_overall_and_every_judged_slice_reproducibly(
    make_config: Callable[..., TrainingConfig], make_frame: Callable[..., pd.DataFrame]
) -> None:
    config = make_config("binary", gate={"min_slice_rows": 100, "bootstrap_draws": 50})
    fit, rows = make_frame("binary", rows=600, seed=1), make_frame("binary", rows=600, seed=2)
    x, y = features_and_target(config, fit)
    good = build_pipeline(config, {"max_iter": 30}).fit(x, y)
    weak = build_pipeline(config, {"max_iter": 1, "max_leaf_nodes": 2}).fit(x, y)

    gains = gain_intervals(config, rows, good, weak)
    again = gain_intervals(config, rows, good, weak)

    assert set(gains) == {"overall", "c1=a", "c1=b", "c1=c"}
    assert gains == again  # seeded: the same comparison, the same interval
    assert gains["overall"].low > 0  # the stronger model is better beyond noise
    # three slices asked one question: each at the family-wise level, so together at 95%
    assert gains["overall"].confidence == config.gate.confidence
    assert all(gains[s].confidence == pytest.approx(1 - 0.05 / 3) for s in ("c1=a", "c1=b", "c1=c"))
    assert (
        gain_intervals(
            config.model_copy(update={"gate": config.gate.model_copy(update={"bootstrap_draws": 0})}), rows, good, weak
        )
        == {}
    )


@pytest.mark.parametrize("metric", ["roc_auc", "average_precision", "log_loss", "f1"])
def test_metric_value_agrees_with_compute_metrics(metric: str) -> None:
    from tasks.model import compute_metrics, metric_value

    y, s = scored(500, 1.0, 3)
    probabilities = 1 / (1 + np.exp(-s))
    assert metric_value("binary", metric, y, probabilities) == compute_metrics("binary", y, probabilities)[metric]
