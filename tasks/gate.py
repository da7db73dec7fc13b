"""Gate: decide whether a challenger may replace the champion.

`decide` is pure (plain values in, a report out); the `gate` task at the bottom publishes it.

Every rule is checked and recorded, then the decision is taken once: the report lists each
check with its numbers, so a person reads why, not just what. Rules (from config):
1. the primary metric is a finite number (NaN or inf never passes);
2. it clears the absolute floor (`min_metric`; a ceiling for lower-is-better metrics);
3. it beats the champion on the same holdout by a strictly positive margin of at least
   `min_improvement` (a tie never promotes: no churn for nothing);
4. no slice large enough to judge (`min_slice_rows`) regresses by more than `max_slice_regression`;
5. each bounded fairness gap (`fairness.bounds`) is a finite number within its bound. This holds
   for every challenger, the first model included: fairness is not relative to the champion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import mlflow
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from tasks.fairness import FairnessReport
from tasks.notify import artifact_key
from tasks.settings import GateConfig, TrainingConfig
from tasks.uncertainty import GainInterval

if TYPE_CHECKING:  # the stage's input; imported lazily to keep this module free of cycles
    from tasks.train import Candidate

SliceMetrics = dict[str, dict[str, float]]  # "origin=EWR" -> {"rows": n, "<metric>": value}


@dataclass(frozen=True)
class MetricReport:
    """One model's metrics on one holdout: overall and per slice."""

    overall: dict[str, float]
    slices: SliceMetrics = field(default_factory=dict)
    fairness: FairnessReport | None = None  # None: the config names no sensitive attribute


@dataclass(frozen=True)
class Evaluation:
    """What the gate decides on: both models scored on the same rows (tasks/evaluate.py makes it)."""

    holdout_rows: int  # the rows both models were scored on
    challenger: MetricReport
    champion: MetricReport | None
    champion_version: str | None
    champion_error: str | None
    compared_on: str = "the challenger's holdout"
    # "overall" and each gated slice: the paired bootstrap interval of the gain (tasks/uncertainty.py)
    gains: dict[str, GainInterval] = field(default_factory=dict)


@dataclass(frozen=True)
class Check:
    rule: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class GateReport:
    metric: str
    passed: bool
    checks: list[Check]
    challenger_value: float
    champion_value: float | None
    champion_version: str | None
    gain: GainInterval | None = None  # the overall gain's bootstrap interval, when one was measured

    @property
    def violations(self) -> list[str]:
        return [f"{c.rule}: {c.detail}" for c in self.checks if not c.passed]

    @property
    def reason(self) -> str:
        if self.passed:
            return "; ".join(c.detail for c in self.checks if c.rule in {"beats champion", "first model"})
        return "; ".join(self.violations)

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "passed": self.passed,
            "challenger_value": self.challenger_value,
            "champion_value": self.champion_value,
            "champion_version": self.champion_version,
            "gain_interval": None if self.gain is None else [self.gain.low, self.gain.high, self.gain.confidence],
            "violations": self.violations,
            "checks": [c.__dict__ for c in self.checks],
        }

    def markdown(self, title: str) -> str:
        verdict = "PASSED: the challenger may be promoted" if self.passed else "REJECTED"
        lines = [
            f"# {title}",
            "",
            f"**{verdict}** on `{self.metric}`: challenger {_fmt(self.challenger_value)}, "
            f"champion {'(none)' if self.champion_value is None else _fmt(self.champion_value)}"
            f"{f' (version {self.champion_version})' if self.champion_version else ''}.",
            "",
            "| rule | result | detail |",
            "| --- | --- | --- |",
        ]
        lines += [f"| {c.rule} | {'pass' if c.passed else '**FAIL**'} | {c.detail} |" for c in self.checks]
        return "\n".join(lines) + "\n"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def decide(
    metric: str,
    higher_is_better: bool,
    rules: GateConfig,
    challenger: MetricReport,
    champion: MetricReport | None,
    champion_version: str | None = None,
    champion_error: str | None = None,
    fairness_bounds: dict[str, float] | None = None,
    gains: dict[str, GainInterval] | None = None,
) -> GateReport:
    """The verdict: every hard rule, the champion beaten by the point gain, no slice regressed for real.

    A slice regressed for real when its drop passes its allowance and its paired bootstrap interval
    (`gains`, where measured) excludes zero.
    """
    gains = gains or {}
    sign = 1.0 if higher_is_better else -1.0
    value = challenger.overall.get(metric, math.nan)
    checks: list[Check] = []

    checks.append(
        Check(
            "finite metric", _finite(value), f"{metric} = {_fmt(value)}" if _finite(value) else f"{metric} is {value}"
        )
    )
    if rules.min_metric is not None:
        ok = _finite(value) and sign * (value - rules.min_metric) >= 0
        bound = ">=" if higher_is_better else "<="
        checks.append(Check("minimum metric", ok, f"{metric} {_fmt(value)} must be {bound} {rules.min_metric}"))

    checks += fairness_checks(fairness_bounds or {}, challenger.fairness)

    champion_value: float | None = None
    if champion_error is not None:
        checks.append(
            Check("beats champion", False, f"champion {champion_version} could not be scored: {champion_error}")
        )
    elif champion is None:
        checks.append(Check("first model", True, "no champion yet: nothing to compare against"))
    else:
        champion_value = champion.overall.get(metric, math.nan)
        if not _finite(champion_value):
            # A champion that cannot be measured on this holdout cannot be beaten measurably either.
            checks.append(Check("beats champion", False, f"champion's {metric} on this holdout is {champion_value}"))
        else:
            gain = sign * (value - champion_value) if _finite(value) else math.nan
            ok = _finite(gain) and gain > 0 and gain >= rules.min_improvement
            noise = f" ({gains['overall'].describe()})" if "overall" in gains else ""
            checks.append(
                Check(
                    "beats champion",
                    ok,
                    f"improvement {_fmt(gain)} over champion {_fmt(champion_value)}; "
                    f"needs > 0 and >= {rules.min_improvement}{noise}",
                )
            )
        checks += slice_checks(metric, sign, rules, challenger.slices, champion.slices, gains)

    return GateReport(
        metric=metric,
        passed=all(c.passed for c in checks),
        checks=checks,
        challenger_value=value,
        champion_value=champion_value,
        champion_version=champion_version,
        gain=gains.get("overall"),
    )


def slice_checks(
    metric: str,
    sign: float,
    rules: GateConfig,
    challenger: SliceMetrics,
    champion: SliceMetrics,
    gains: dict[str, GainInterval] | None = None,
) -> list[Check]:
    """One check per slice both models were scored on with enough rows.

    A drop beyond `max_slice_regression` blocks, unless the slice's paired interval of the gain
    reaches zero: then the drop is within what resampling the same rows gives by chance.
    """
    gains = gains or {}
    checks = []
    for name in sorted(set(challenger) & set(champion)):
        rows = int(challenger[name].get("rows", 0))
        if rows < rules.min_slice_rows:
            continue
        new, old = challenger[name].get(metric, math.nan), champion[name].get(metric, math.nan)
        if not _finite(old):
            continue  # nothing measurable to regress from (e.g. a one-class slice)
        drop = sign * (old - new) if _finite(new) else math.inf
        interval = gains.get(name)
        noise = interval is not None and interval.measured and interval.high >= 0 and math.isfinite(drop)
        within = drop <= rules.max_slice_regression
        detail = (
            f"{metric} {_fmt(old)} -> {_fmt(new) if _finite(new) else new} ({rows} rows); "
            f"regression {_fmt(drop)} allowed <= {rules.max_slice_regression}"
        )
        if interval is not None:
            detail += f"; {interval.describe()}"
            if not within and noise:
                detail += ": within sampling noise, not blocking"
        checks.append(Check(f"slice {name}", within or noise, detail))
    return checks


def fairness_checks(bounds: dict[str, float], report: FairnessReport | None) -> list[Check]:
    """One check per bounded fairness metric; an unmeasured gap (NaN, no report) never passes."""
    checks = []
    for metric, bound in sorted(bounds.items()):
        if report is None:
            checks.append(Check(f"fairness {metric}", False, "fairness was not measured on this holdout"))
            continue
        gap = report.metrics.get(metric, math.nan)
        measured = f"{len(report.groups)} groups of {report.attribute} measured"
        if report.excluded:
            measured += f", {len(report.excluded)} too small: {', '.join(report.excluded)}"
        checks.append(
            Check(
                f"fairness {metric}",
                _finite(gap) and gap <= bound,
                f"{_fmt(gap) if _finite(gap) else 'not measurable (fewer than two groups)'} "
                f"across {report.attribute}, allowed <= {bound} ({measured})",
            )
        )
    return checks


# --- the stage: decide, then show the report in Prefect and MLflow -----------------------------


def decide_evaluation(config: TrainingConfig, evaluation: Evaluation) -> GateReport:
    """The config's rules applied to an evaluation (the training gate and every re-judgement)."""
    return decide(
        metric=config.gate.metric,
        higher_is_better=config.higher_is_better,
        rules=config.gate,
        challenger=evaluation.challenger,
        champion=evaluation.champion,
        champion_version=evaluation.champion_version,
        champion_error=evaluation.champion_error,
        fairness_bounds=config.fairness.bounds,
        gains=evaluation.gains,
    )


@task(name="gate", cache_policy=NO_CACHE)
def gate(config: TrainingConfig, evaluation: Evaluation, candidate: Candidate) -> GateReport:
    """Decide once, then publish the whole report: a Prefect artifact and MLflow run files."""
    report = decide_evaluation(config, evaluation)
    title = f"Gate: {candidate.label}"
    markdown = report.markdown(title)
    create_markdown_artifact(markdown, key=artifact_key("gate", candidate.name), description=title)
    with mlflow.start_run(run_id=candidate.run_id):
        mlflow.log_dict(report.to_dict(), "gate/report.json")
        mlflow.log_text(markdown, "gate/report.md")
        mlflow.log_metric("gate_passed", float(report.passed))
    get_run_logger().info("gate %s: %s", "passed" if report.passed else "rejected", report.reason)
    return report
