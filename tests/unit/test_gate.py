"""decide: every rule checked and reported, one verdict; NaN, ties and regressions never promote."""

from __future__ import annotations

import json
import math

import pytest

from tasks.gate import GateReport, MetricReport, decide
from tasks.settings import GateConfig

RULES = GateConfig(metric="roc_auc", min_improvement=0.01, max_slice_regression=0.05, min_slice_rows=100)


def report(value: float, metric: str = "roc_auc", **slices: tuple[int, float]) -> MetricReport:
    """`report(0.8, EWR=(500, 0.79))`: overall value and per-slice (rows, value)."""
    return MetricReport(
        overall={metric: value, "accuracy": 0.5},
        slices={f"origin={name}": {"rows": rows, metric: v} for name, (rows, v) in slices.items()},
    )


def judge(
    challenger: MetricReport,
    champion: MetricReport | None,
    rules: GateConfig = RULES,
    higher_is_better: bool = True,
    **kwargs,
) -> GateReport:
    return decide(rules.metric, higher_is_better, rules, challenger, champion, **kwargs)


def failed_rules(result: GateReport) -> set[str]:
    return {c.rule for c in result.checks if not c.passed}


# --- the champion comparison ------------------------------------------------------------------


def test_first_model_passes_without_a_champion() -> None:
    result = judge(report(0.61), None)
    assert result.passed
    assert result.violations == []
    assert [c.rule for c in result.checks] == ["finite metric", "first model"]
    assert result.champion_value is None
    assert "no champion" in result.reason


@pytest.mark.parametrize("min_improvement", [0.0, 0.01])
def test_a_tie_with_the_champion_is_rejected(min_improvement: float) -> None:
    rules = RULES.model_copy(update={"min_improvement": min_improvement})
    result = judge(report(0.80), report(0.80), rules)
    assert not result.passed
    assert failed_rules(result) == {"beats champion"}
    assert result.champion_value == 0.80


@pytest.mark.parametrize(
    ("challenger", "passed"),
    [
        (0.75, False),  # worse
        (0.805, False),  # better, but by less than min_improvement 0.01
        (0.83, True),  # better by more than min_improvement
    ],
)
def test_improvement_must_reach_min_improvement(challenger: float, passed: bool) -> None:
    result = judge(report(challenger), report(0.80))
    assert result.passed is passed
    assert failed_rules(result) == (set() if passed else {"beats champion"})


@pytest.mark.parametrize(
    ("challenger", "champion", "higher_is_better", "passed"),
    [
        (0.90, 1.00, False, True),  # rmse down by 0.1: better
        (1.10, 1.00, False, False),  # rmse up: worse, even though the number is larger
        (0.90, 1.00, True, False),  # the same numbers read higher-is-better: worse
        (1.10, 1.00, True, True),
    ],
)
def test_direction_of_the_metric_is_respected(
    challenger: float, champion: float, higher_is_better: bool, passed: bool
) -> None:
    rules = GateConfig(metric="rmse", min_improvement=0.05)
    result = judge(report(challenger, "rmse"), report(champion, "rmse"), rules, higher_is_better)
    assert result.passed is passed


# --- the metric itself ----------------------------------------------------------------------


@pytest.mark.parametrize("higher_is_better", [True, False])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("has_champion", [False, True], ids=["first", "vs-champion"])
def test_non_finite_challenger_never_passes(bad: float, higher_is_better: bool, has_champion: bool) -> None:
    champion = report(0.8) if has_champion else None
    result = judge(report(bad), champion, higher_is_better=higher_is_better)
    assert not result.passed
    assert "finite metric" in failed_rules(result)
    if has_champion:
        assert "beats champion" in failed_rules(result)


def test_a_missing_metric_counts_as_nan() -> None:
    result = judge(MetricReport(overall={"accuracy": 0.9}), None)
    assert not result.passed
    assert failed_rules(result) == {"finite metric"}
    assert math.isnan(result.challenger_value)


@pytest.mark.parametrize(
    ("value", "higher_is_better", "passed"),
    [
        (0.69, True, False),
        (0.70, True, True),  # the floor itself is allowed
        (0.71, True, True),
        (0.69, False, True),  # lower-is-better: min_metric is a ceiling
        (0.70, False, True),
        (0.71, False, False),
    ],
)
def test_min_metric_is_a_floor_or_a_ceiling(value: float, higher_is_better: bool, passed: bool) -> None:
    rules = RULES.model_copy(update={"min_metric": 0.70})
    result = judge(report(value), None, rules, higher_is_better)
    assert result.passed is passed
    assert failed_rules(result) == (set() if passed else {"minimum metric"})


def test_the_floor_applies_even_when_the_champion_is_beaten() -> None:
    rules = RULES.model_copy(update={"min_metric": 0.70})
    result = judge(report(0.65), report(0.55), rules)
    assert not result.passed
    assert failed_rules(result) == {"minimum metric"}


# --- an unusable champion ---------------------------------------------------------------------


@pytest.mark.parametrize("champion_value", [math.nan, math.inf])
def test_unmeasurable_champion_is_rejected(champion_value: float) -> None:
    result = judge(report(0.95), report(champion_value))
    assert not result.passed
    assert failed_rules(result) == {"beats champion"}


def test_champion_error_rejects_even_a_great_challenger() -> None:
    result = judge(report(0.99), None, champion_version="7", champion_error="schema mismatch: no column x9")
    assert not result.passed
    assert failed_rules(result) == {"beats champion"}
    assert "schema mismatch" in result.reason
    assert "7" in result.violations[0]


# --- slices -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("new", "passed"),
    [(0.70, False), (0.76, True), (0.90, True)],  # drop of 0.10 > 0.05 allowed; drop of 0.04; a gain
)
def test_slice_regression_beyond_the_bound_is_rejected(new: float, passed: bool) -> None:
    result = judge(report(0.85, EWR=(500, new)), report(0.80, EWR=(500, 0.80)))
    assert result.passed is passed
    assert failed_rules(result) == (set() if passed else {"slice origin=EWR"})


def test_slice_regression_respects_lower_is_better() -> None:
    rules = GateConfig(metric="rmse", min_improvement=0.0, max_slice_regression=0.05, min_slice_rows=100)
    better = judge(report(0.9, "rmse", JFK=(500, 0.8)), report(1.0, "rmse", JFK=(500, 1.0)), rules, False)
    worse = judge(report(0.9, "rmse", JFK=(500, 1.2)), report(1.0, "rmse", JFK=(500, 1.0)), rules, False)
    assert better.passed
    assert failed_rules(worse) == {"slice origin=JFK"}


def test_small_slices_are_not_gated() -> None:
    result = judge(report(0.85, LGA=(99, 0.10)), report(0.80, LGA=(99, 0.90)))
    assert result.passed
    assert not any(c.rule.startswith("slice") for c in result.checks)


def test_slice_turning_nan_is_a_regression_but_a_nan_champion_slice_is_skipped() -> None:
    went_nan = judge(report(0.85, EWR=(500, math.nan)), report(0.80, EWR=(500, 0.80)))
    assert failed_rules(went_nan) == {"slice origin=EWR"}
    was_nan = judge(report(0.85, EWR=(500, 0.5)), report(0.80, EWR=(500, math.nan)))
    assert was_nan.passed


def test_slices_are_checked_only_against_a_champion() -> None:
    result = judge(report(0.85, EWR=(500, 0.1)), None)
    assert result.passed


# --- the report -------------------------------------------------------------------------------


def test_all_violations_are_listed_at_once() -> None:
    rules = RULES.model_copy(update={"min_metric": 0.9})
    challenger = report(0.79, EWR=(500, 0.60), JFK=(500, 0.80), LGA=(500, 0.70))
    champion = report(0.80, EWR=(500, 0.80), JFK=(500, 0.80), LGA=(500, 0.80))
    result = judge(challenger, champion, rules)
    assert not result.passed
    assert failed_rules(result) == {"minimum metric", "beats champion", "slice origin=EWR", "slice origin=LGA"}
    assert len(result.violations) == 4
    assert "slice origin=JFK" in {c.rule for c in result.checks if c.passed}
    for violation in result.violations:
        assert violation in result.reason


def test_markdown_shows_the_verdict_and_every_rule() -> None:
    rejected = judge(report(0.79, EWR=(500, 0.6)), report(0.80, EWR=(500, 0.8)), champion_version="3")
    text = rejected.markdown("Gate: synthetic-model version 4")
    assert text.startswith("# Gate: synthetic-model version 4\n")
    assert "**REJECTED**" in text
    assert "PASSED" not in text
    assert "version 3" in text
    for check in rejected.checks:
        assert f"| {check.rule} |" in text
    assert text.count("**FAIL**") == len(rejected.violations) == 2

    passed = judge(report(0.9), None).markdown("Gate")
    assert "**PASSED" in passed
    assert "REJECTED" not in passed
    assert "(none)" in passed
    assert "| first model | pass |" in passed


def test_report_serialises_for_mlflow() -> None:
    result = judge(report(0.79), report(0.80), champion_version="3")
    data = json.loads(json.dumps(result.to_dict()))
    assert data["passed"] is False
    assert data["champion_version"] == "3"
    assert data["violations"] == result.violations
    assert [c["rule"] for c in data["checks"]] == [c.rule for c in result.checks]
