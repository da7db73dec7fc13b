"""Gate properties (Hypothesis): no input makes the gate promote a model that is not better.

Two layers. `decide` alone, over random metric pairs (exact ties, gaps of 1e-12 and one ulp,
NaN, +inf, -inf, values far outside [0, 1]), random rules and random slices: a pass always
means strictly better than the champion on the same holdout, by the margin, with no judged
slice regressing beyond its bound. Then a state machine over a real MLflow SQLite registry:
real logged candidates go through `apply_decision`, some with a promotion landing between
their gate and their promotion, and the champion's holdout metric never goes down. A second
machine gives every candidate a training window of its own (so each has its own holdout, and a
model scores perfectly on rows it was fitted on): the comparison must be made on rows neither was
fitted on, or recorded as not comparable, and the outcome is the one the models' true quality implies.

Settings are derandomized and write no example database, so CI runs the same examples every time.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import mlflow
import pandas as pd
import pytest
from hypothesis import Phase, event, find, given, settings, target
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test
from mlflow import MlflowClient
from mlflow.tracking import _tracking_service, fluent
from mlflow.tracking._model_registry import utils as registry_utils

from tasks.evaluate import Fitted, comparison_rows
from tasks.faults import FAILPOINTS_ENV
from tasks.gate import GateReport, MetricReport, decide
from tasks.promote import apply_decision
from tasks.registry import CHAMPION, TAG_DECISION, version_by_alias
from tasks.settings import METRIC_DIRECTIONS, GateConfig, TimeWindow, TrainingConfig
from tests.candidates import logged_candidate
from tests.unit.conftest import config_dict

PURE = settings(max_examples=300, deadline=None, derandomize=True, database=None)
REGISTRY = settings(max_examples=8, stateful_step_count=8, deadline=None, derandomize=True, database=None)

# Every gateable metric with its direction, taken from the config code (rmse, log_loss, brier: lower is better).
DIRECTIONS: dict[str, bool] = {m: up for task in METRIC_DIRECTIONS.values() for m, up in task.items()}
NON_FINITE = [math.nan, math.inf, -math.inf]
FINAL_DECISIONS = {"promoted", "rejected", "superseded"}


# --- strategies -------------------------------------------------------------------------------

finite_values = st.one_of(
    st.floats(0.0, 1.0),  # scores such as roc_auc
    st.floats(allow_nan=False, allow_infinity=False),  # errors such as rmse: any size, any sign
    st.sampled_from([0.0, -0.0, 1.0, 1e-12, 5e-324, 1e308, -1e308]),
)
values = st.one_of(finite_values, finite_values, st.sampled_from(NON_FINITE))  # one in three not finite


@st.composite
def near(draw: st.DrawFn, base: float, margin: float, better: float | None = None) -> float:
    """A value the gate finds hard to tell from `base`: a tie, 1e-12 or one ulp off, right at the margin.

    `better` (+1 or -1) leans two draws in three towards that side of `base`; None leans nowhere.
    """
    how = draw(st.sampled_from(["margin", "ulp", "tiny", "tie", "margin", "other"]))
    if how == "other" or not math.isfinite(base):
        return draw(values) if how == "other" else base
    step = draw(st.sampled_from([1.0, -1.0] if better is None else [better, better, -better]))
    if how == "tie":
        return base
    if how == "tiny":
        return base + step * 1e-12
    if how == "ulp":
        return math.nextafter(base, step * math.inf)
    return base + step * margin * draw(st.sampled_from([1.0, 1.0, 1 - 1e-12, 1 + 1e-12, 0.5, 2.0]))


@dataclass(frozen=True)
class Case:
    """The arguments of one `decide` call."""

    metric: str
    higher_is_better: bool
    rules: GateConfig
    challenger: MetricReport
    champion: MetricReport | None
    champion_version: str | None
    champion_error: str | None

    def judge(self) -> GateReport:
        return decide(
            self.metric,
            self.higher_is_better,
            self.rules,
            self.challenger,
            self.champion,
            champion_version=self.champion_version,
            champion_error=self.champion_error,
        )

    @property
    def sign(self) -> int:
        return 1 if self.higher_is_better else -1


margins = st.one_of(st.just(0.0), st.floats(0.0, 0.05), st.floats(0.0, 1.0), st.floats(0.0, 1e6))


@st.composite
def cases(
    draw: st.DrawFn,
    challenger_values: st.SearchStrategy[float] | None = None,
    champion_values: st.SearchStrategy[float] | None = None,
    with_champion: bool | None = None,
    champion_error: bool | None = False,
) -> Case:
    metric = draw(st.sampled_from(sorted(DIRECTIONS)))
    sign = 1.0 if DIRECTIONS[metric] else -1.0
    min_improvement, max_slice_regression = draw(margins), draw(margins)
    min_slice_rows = draw(st.integers(1, 500))
    has_champion = draw(st.integers(0, 3)) > 0 if with_champion is None else with_champion
    old = draw(values if champion_values is None else champion_values)
    new = draw(near(old, min_improvement, sign) if challenger_values is None else challenger_values)
    floor = draw(st.none() | st.none() | finite_values | near(new, 0.0))  # often right at the challenger's value
    rules = GateConfig(
        metric=metric,
        min_metric=floor if floor is None or math.isfinite(floor) else None,
        min_improvement=min_improvement,
        max_slice_regression=max_slice_regression,
        min_slice_rows=min_slice_rows,
    )
    old_slices: dict[str, dict[str, float]] = {}
    new_slices: dict[str, dict[str, float]] = {}
    for name in draw(st.lists(st.sampled_from(["origin=EWR", "origin=JFK", "origin=LGA", "carrier=UA"]), unique=True)):
        # the same holdout, so the same rows on both sides; often right at the threshold
        rows = draw(st.sampled_from([0, min_slice_rows - 1, min_slice_rows]) | st.integers(0, 1000))
        before = draw(values)
        old_slices[name] = {"rows": rows, metric: before}
        new_slices[name] = {"rows": rows}
        if draw(st.integers(0, 9)):  # sometimes the challenger has no value for the slice at all
            new_slices[name][metric] = draw(near(before, max_slice_regression))
    if champion_error is None:
        champion_error = draw(st.booleans())
    return Case(
        metric=metric,
        higher_is_better=DIRECTIONS[metric],
        rules=rules,
        challenger=MetricReport({"fit_seconds": 1.5, metric: new}, new_slices),
        champion=MetricReport({"fit_seconds": 2.5, metric: old}, old_slices) if has_champion else None,
        champion_version="3" if has_champion or champion_error else None,
        champion_error="champion could not be scored: schema mismatch" if champion_error else None,
    )


def failed(report: GateReport) -> set[str]:
    return {c.rule for c in report.checks if not c.passed}


def judged_slices(case: Case) -> Iterator[tuple[str, float, float]]:
    """(name, champion value, challenger value) for each slice the gate must judge."""
    assert case.champion is not None
    for name, old in case.champion.slices.items():
        new = case.challenger.slices.get(name)
        if new is None or new["rows"] < case.rules.min_slice_rows or not math.isfinite(old[case.metric]):
            continue
        yield name, old[case.metric], new.get(case.metric, math.nan)


def at_least(exact: Fraction, bound: float) -> bool:
    """`exact >= bound`, allowing the one rounding of the gate's float subtraction (an ulp of the bound)."""
    return exact >= Fraction(bound) - Fraction(math.ulp(bound))


# --- properties of `decide` -------------------------------------------------------------------


@settings(PURE, max_examples=1000)
@given(case=cases() | cases(champion_values=finite_values, with_champion=True))  # half against a measurable champion
def test_a_pass_means_strictly_better_than_the_champion_by_the_margin(case: Case) -> None:
    """(a) and (d): never a worse model, overall or on any slice large enough to judge."""
    report = case.judge()
    event("passed" if report.passed else "rejected", payload="vs champion" if case.champion else "first model")
    # steer generation towards passes against a champion with slices judged: where (a) and (d) bite
    judged = sum(c.rule.startswith("slice") for c in report.checks)
    target(float(report.passed and case.champion is not None) * (1 + judged), label="passes with slices judged")
    if not report.passed:
        return
    new = case.challenger.overall[case.metric]
    assert math.isfinite(new)
    if case.rules.min_metric is not None:
        assert case.sign * (new - case.rules.min_metric) >= 0
    if case.champion is None:
        return
    old = case.champion.overall[case.metric]
    assert math.isfinite(old)
    gain = case.sign * (Fraction(new) - Fraction(old))  # exact: no rounding can fake a gain
    assert gain > 0, f"passed without beating the champion: {new!r} vs {old!r}"
    assert case.sign * (new - old) >= case.rules.min_improvement
    assert at_least(gain, case.rules.min_improvement)
    event("passed with judged slices", payload=len(list(judged_slices(case))))
    for name, before, after in judged_slices(case):
        assert math.isfinite(after), f"slice {name} went from {before!r} to {after!r} and still passed"
        drop = case.sign * (Fraction(before) - Fraction(after))
        assert at_least(-drop, -case.rules.max_slice_regression), f"slice {name}: {before!r} -> {after!r}"
        assert f"slice {name}" in {c.rule for c in report.checks}


@PURE
@given(data=st.data(), champion=values)
def test_a_tie_never_passes(data: st.DataObject, champion: float) -> None:
    """(b) the same value, -0.0 against 0.0 included: no churn for nothing, whatever the rules."""
    tie = -champion if champion == 0 else champion
    case = data.draw(cases(challenger_values=st.just(tie), champion_values=st.just(champion), with_champion=True))
    report = case.judge()
    assert not report.passed
    assert "beats champion" in failed(report)


@PURE
@given(case=cases(challenger_values=st.sampled_from(NON_FINITE), champion_error=None))
def test_a_non_finite_challenger_never_passes(case: Case) -> None:
    """(c) NaN, +inf and -inf are broken models, never perfect ones, even as the first model."""
    report = case.judge()
    assert not report.passed
    assert "finite metric" in failed(report)


@PURE
@given(case=cases(champion_values=st.sampled_from(NON_FINITE), challenger_values=values, with_champion=True))
def test_an_unmeasurable_champion_never_lets_a_challenger_pass(case: Case) -> None:
    """(c) a NaN or infinite champion cannot be beaten measurably, so nothing replaces it by this gate."""
    report = case.judge()
    assert not report.passed
    assert "beats champion" in failed(report)


@PURE
@given(case=cases(with_champion=True), missing=st.sampled_from(["challenger", "champion"]))
def test_a_missing_metric_counts_as_nan(case: Case, missing: str) -> None:
    """(c) a report without the gated metric is as bad as NaN, on either side."""
    side = case.challenger if missing == "challenger" else case.champion
    assert side is not None
    without = MetricReport({k: v for k, v in side.overall.items() if k != case.metric}, side.slices)
    changed = Case(**{**case.__dict__, missing: without})
    assert not changed.judge().passed


@PURE
@given(case=cases(champion_error=True))
def test_a_champion_that_could_not_be_scored_always_blocks(case: Case) -> None:
    """(f) with or without a champion report, whatever the challenger scored."""
    report = case.judge()
    assert not report.passed
    assert "beats champion" in failed(report)
    assert "schema mismatch" in report.reason


@PURE
@given(case=cases(champion_error=None))
def test_the_decision_is_deterministic_and_the_verdict_is_all_checks(case: Case) -> None:
    """(e) the same inputs give the same report; the verdict is the conjunction; inputs stay as they were."""
    before = repr(case)
    first, second = case.judge(), copy.deepcopy(case).judge()
    assert repr(first) == repr(second)
    assert first.passed == all(c.passed for c in first.checks)
    assert first.passed == (first.violations == [])
    assert repr(case) == before


@PURE
@given(case=cases(champion_error=None))
def test_the_direction_is_symmetric(case: Case) -> None:
    """Negating every value and flipping the direction changes nothing: the sign is applied consistently."""

    def flip(report: MetricReport | None) -> MetricReport | None:
        if report is None:
            return None
        return MetricReport(
            {k: -v if k == case.metric else v for k, v in report.overall.items()},
            {s: {k: -v if k == case.metric else v for k, v in row.items()} for s, row in report.slices.items()},
        )

    floor = case.rules.min_metric
    rules = case.rules.model_copy(update={"min_metric": None if floor is None else -floor})
    mirrored = Case(
        **{
            **case.__dict__,
            "higher_is_better": not case.higher_is_better,
            "rules": rules,
            "challenger": flip(case.challenger),
            "champion": flip(case.champion),
        }
    )
    original, other = case.judge(), mirrored.judge()
    assert original.passed == other.passed
    assert failed(original) == failed(other)


def test_the_strategies_reach_passing_verdicts() -> None:
    """The properties above are not vacuous: passes happen, with slices judged and with tiny margins."""
    quick = settings(database=None, derandomize=True, max_examples=2000, phases=[Phase.generate])

    def passes_with_a_judged_slice(case: Case) -> bool:
        return case.judge().passed and any(c.rule.startswith("slice") for c in case.judge().checks)

    def passes_by_a_hair(case: Case) -> bool:
        assert case.champion is not None
        gap = case.challenger.overall[case.metric] - case.champion.overall[case.metric]
        return case.judge().passed and 0 < abs(gap) < 1e-9

    assert passes_with_a_judged_slice(find(cases(with_champion=True), passes_with_a_judged_slice, settings=quick))
    assert passes_by_a_hair(find(cases(with_champion=True), passes_by_a_hair, settings=quick))


def test_metric_directions_agree_across_task_types() -> None:
    """A metric shared by task types (accuracy, log_loss) has one direction, so DIRECTIONS is well defined."""
    for task in METRIC_DIRECTIONS.values():
        for metric, up in task.items():
            assert DIRECTIONS[metric] is up


# --- a state machine over a real registry -----------------------------------------------------


@dataclass(frozen=True)
class Registry:
    client: MlflowClient
    lock_dir: Path


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Registry:
    """One SQLite registry for the whole machine run (each example uses a model of its own)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setattr(_tracking_service.utils, "_tracking_uri", None)
    monkeypatch.setattr(registry_utils, "_registry_uri", None)
    monkeypatch.setattr(fluent, "_active_experiment_id", None)
    monkeypatch.delenv(FAILPOINTS_ENV, raising=False)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    experiment = mlflow.create_experiment("gate-properties", artifact_location=(tmp_path / "artifacts").as_uri())
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", experiment)  # set_experiment writes it; restored after
    mlflow.set_experiment(experiment_id=experiment)
    return Registry(MlflowClient(tracking_uri=uri, registry_uri=uri), tmp_path / "locks")


HOLDOUT_METRIC = "roc_auc"  # higher is better
_models = itertools.count(1)


class Champion(NamedTuple):
    version: str
    score: float  # its roc_auc on the one fixed holdout every candidate is scored on


def holdout_scores(base: float | None, margin: float, close: bool) -> st.SearchStrategy[float]:
    """A candidate's roc_auc on the fixed holdout: anything, or (`close`: only) near the score to beat."""
    anything = st.one_of(st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.sampled_from(NON_FINITE))
    if base is None:
        return anything
    return near(base, margin, better=1.0) if close else st.one_of(anything, near(base, margin, better=1.0))


def better_scores(base: float | None, margin: float) -> st.SearchStrategy[float]:
    """A score meant to beat `base` by the margin (the float sum may still round just short of it)."""
    if base is None:
        return st.floats(0.0, 1.0)
    extra = st.sampled_from([0.0, 1e-12]) | st.floats(0.0, 0.2)
    return extra.map(lambda e: base + margin + e if margin or e else math.nextafter(base, math.inf))


class PromotionMachine(RuleBasedStateMachine):
    """Candidates arrive with a score on one fixed holdout; the registry decides through the real guard."""

    def __init__(self, registry: Registry) -> None:
        super().__init__()
        self.client, self.lock_dir = registry.client, registry.lock_dir
        self.name = f"gate-properties-{next(_models)}"
        self.scores: dict[str, float] = {}  # version -> its roc_auc on the holdout
        self.rules = GateConfig(metric=HOLDOUT_METRIC)
        self.last_champion: Champion | None = None

    @initialize(min_improvement=st.sampled_from([0.0, 0.01]))
    def choose_rules(self, min_improvement: float) -> None:
        self.rules = GateConfig(metric=HOLDOUT_METRIC, min_improvement=min_improvement)

    # what the flow does: read the champion once, gate against it, promote with that version

    def champion(self) -> Champion | None:
        found = version_by_alias(self.name, CHAMPION, self.client)
        return None if found is None else Champion(found.version, self.scores[found.version])

    def judge(self, score: float, champion: Champion | None) -> GateReport:
        return decide(
            HOLDOUT_METRIC,
            True,
            self.rules,
            MetricReport({HOLDOUT_METRIC: score}),
            None if champion is None else MetricReport({HOLDOUT_METRIC: champion.score}),
            champion_version=None if champion is None else champion.version,
        )

    def draw_score(self, data: st.DataObject, base: float | None, label: str, close: bool = False) -> float:
        return data.draw(holdout_scores(base, self.rules.min_improvement, close), label=label)

    @rule(data=st.data())
    def candidate(self, data: st.DataObject) -> None:
        champion = self.champion()
        score = self.draw_score(data, None if champion is None else champion.score, "score")
        report = self.judge(score, champion)
        decision = apply_decision(
            self.client,
            logged_candidate(self.name),
            report,
            compared_with=None if champion is None else champion.version,
            locks=self.lock_dir,
        )
        assert decision.version is not None
        self.scores[decision.version] = score
        assert decision.outcome == ("promoted" if report.passed else "rejected"), decision.reason
        event(f"candidate {decision.outcome}")

    @rule(data=st.data())
    def promotion_lands_in_between(self, data: st.DataObject) -> None:
        """`late` is gated against champion A; `winner` is promoted over A before `late` is applied."""
        a = self.champion()
        a_score, a_version = (a.score, a.version) if a else (None, None)
        winner_score = data.draw(better_scores(a_score, self.rules.min_improvement), label="winner")
        late_base = data.draw(st.sampled_from([a_score, winner_score]))
        late_score = self.draw_score(data, late_base, "late", close=True)
        late = logged_candidate(self.name)
        late_report = self.judge(late_score, a)

        won = apply_decision(
            self.client, logged_candidate(self.name), self.judge(winner_score, a), a_version, self.lock_dir
        )
        assert won.version is not None
        self.scores[won.version] = winner_score
        rejudged: list[str] = []

        def rejudge(version: str) -> GateReport:
            rejudged.append(version)
            return self.judge(late_score, Champion(version, self.scores[version]))

        decision = apply_decision(self.client, late, late_report, a_version, self.lock_dir, rejudge=rejudge)
        assert decision.version is not None
        self.scores[decision.version] = late_score

        if not late_report.passed:
            expected, asked = "rejected", []
        elif won.outcome != "promoted":
            expected, asked = "promoted", []  # nothing changed in between
        else:
            beats_winner = self.judge(late_score, Champion(won.version, winner_score)).passed
            expected, asked = ("promoted" if beats_winner else "superseded"), [won.version]
        assert (decision.outcome, rejudged) == (expected, asked), decision.reason
        event(f"winner {won.outcome}, late {decision.outcome}")

    # what must hold after every step

    @invariant()
    def champion_is_one_promoted_finite_version_and_never_worse(self) -> None:
        champion = version_by_alias(self.name, CHAMPION, self.client)
        if champion is None:
            assert self.last_champion is None, "the champion alias disappeared"
            assert "promoted" not in {self.decision(v) for v in self.scores}
            return
        aliases = self.client.get_registered_model(self.name).aliases
        assert str(aliases[CHAMPION]) == champion.version
        assert champion.tags.get(TAG_DECISION) == "promoted"
        score = self.scores[champion.version]
        assert math.isfinite(score), f"version {champion.version} with roc_auc {score} became champion"
        if self.last_champion is not None:
            version, best = self.last_champion
            assert score >= best, f"champion went from {version} ({best!r}) to {champion.version} ({score!r})"
            if champion.version != version:
                assert score > best, "a tie replaced the champion"
        self.last_champion = Champion(champion.version, score)

    @invariant()
    def every_version_has_a_final_decision(self) -> None:
        if not self.client.search_registered_models(filter_string=f"name = '{self.name}'"):
            assert not self.scores
            return
        versions = self.client.search_model_versions(f"name = '{self.name}'")
        assert {str(v.version) for v in versions} == set(self.scores), "a candidate was lost or registered twice"
        for version in versions:
            assert version.tags.get(TAG_DECISION) in FINAL_DECISIONS, (version.version, dict(version.tags))
        promoted = [self.scores[str(v.version)] for v in versions if v.tags.get(TAG_DECISION) == "promoted"]
        if promoted:  # each promotion beat the one before, so the champion is the best model ever promoted
            champion = self.champion()
            assert champion is not None
            assert champion.score == max(promoted)

    def decision(self, version: str) -> str | None:
        return self.client.get_model_version(self.name, version).tags.get(TAG_DECISION)


def test_the_champion_never_gets_worse_over_a_sequence_of_candidates(registry: Registry) -> None:
    run_state_machine_as_test(lambda: PromotionMachine(registry), settings=REGISTRY)


# --- each candidate with its own window: cross-holdout comparisons -------------------------------

DAY0 = date(2024, 1, 1)
TIMELINE = pd.DataFrame({"ts": pd.date_range(DAY0, periods=24 * 150, freq="h", tz="UTC")})
HOLDOUT_DAYS = 5


class Trained(NamedTuple):
    fitted: Fitted
    holdout: pd.DataFrame
    quality: float  # its roc_auc on any row it was not fitted on


def trained_on(start_day: int, days: int, quality: float, whole_window: bool = False) -> Trained:
    """`whole_window`: refitted on its holdout too (or a version whose split was never recorded)."""
    start, end = DAY0 + timedelta(days=start_day), DAY0 + timedelta(days=start_day + days)
    holdout_start = pd.Timestamp(end - timedelta(days=HOLDOUT_DAYS), tz="UTC")
    stamps = TIMELINE["ts"]
    holdout = TIMELINE[(stamps >= holdout_start) & (stamps < pd.Timestamp(end, tz="UTC"))]
    fitted_until = pd.Timestamp(end, tz="UTC") if whole_window else holdout_start
    return Trained(Fitted.of_splits(TimeWindow(start=start, end=end), fitted_until), holdout, quality)


def measured(model: Trained, rows: pd.DataFrame) -> float:
    """What scoring `rows` shows: a perfect score if any of them was in its fit set (memorised)."""
    stamps = rows["ts"]
    seen = ((stamps >= model.fitted.start) & (stamps < model.fitted.end)).any()
    return 1.0 if seen else model.quality


class CrossHoldoutMachine(RuleBasedStateMachine):
    """Candidates with windows of their own, judged through `comparison_rows` and the real guard."""

    def __init__(self, registry: Registry) -> None:
        super().__init__()
        self.client, self.lock_dir = registry.client, registry.lock_dir
        self.name = f"cross-holdout-{next(_models)}"
        self.config = TrainingConfig.model_validate({**config_dict("binary"), "model_name": self.name})
        self.models: dict[str, Trained] = {}
        self.last_quality: float | None = None

    def champion(self) -> tuple[str, Trained] | None:
        found = version_by_alias(self.name, CHAMPION, self.client)
        return None if found is None else (found.version, self.models[found.version])

    @rule(
        start=st.integers(0, 110),
        days=st.integers(HOLDOUT_DAYS + 2, 40),
        quality=st.sampled_from([0.55, 0.6, 0.6 + 1e-12, 0.65, 0.7, 0.7, 0.75]),
        whole_window=st.sampled_from([False, False, True]),
    )
    def candidate(self, start: int, days: int, quality: float, whole_window: bool) -> None:
        challenger = trained_on(start, days, quality, whole_window)
        current = self.champion()
        gate = self.config.gate
        if current is None:
            report = decide(
                HOLDOUT_METRIC,
                True,
                gate,
                MetricReport({HOLDOUT_METRIC: measured(challenger, challenger.holdout)}),
                None,
            )
            expected = "promoted"
        else:
            version, champion = current
            _, rows, error = comparison_rows(
                self.config,
                challenger.fitted,
                lambda: challenger.holdout,
                champion.fitted,
                lambda: champion.holdout,
                version,
            )
            report = decide(
                HOLDOUT_METRIC,
                True,
                gate,
                MetricReport({HOLDOUT_METRIC: measured(challenger, rows)}),
                None if error else MetricReport({HOLDOUT_METRIC: measured(champion, rows)}),
                champion_version=version,
                champion_error=error,
            )
            later = challenger if challenger.fitted.window_end >= champion.fitted.window_end else champion
            fresh = later.holdout[
                ~later.holdout["ts"].between(challenger.fitted.start, challenger.fitted.end, inclusive="left")
                & ~later.holdout["ts"].between(champion.fitted.start, champion.fitted.end, inclusive="left")
            ]
            truly = decide(
                HOLDOUT_METRIC,
                True,
                gate,
                MetricReport({HOLDOUT_METRIC: quality}),
                MetricReport({HOLDOUT_METRIC: champion.quality}),
            )
            needed = min(gate.min_comparison_rows, -(-len(later.holdout) // 2))  # or half the holdout
            expected = "promoted" if len(fresh) >= needed and truly.passed else "rejected"
            event("comparable" if error is None else "not comparable")
        decision = apply_decision(
            self.client,
            logged_candidate(self.name),
            report,
            compared_with=None if current is None else current[0],
            locks=self.lock_dir,
        )
        assert decision.version is not None
        self.models[decision.version] = challenger
        assert decision.outcome == expected, (decision.reason, challenger, current)

    @invariant()
    def the_champions_true_quality_never_goes_down(self) -> None:
        current = self.champion()
        if current is None:
            return
        quality = current[1].quality
        if self.last_quality is not None:
            assert quality >= self.last_quality
        self.last_quality = quality


def test_each_candidate_with_its_own_window_is_compared_on_rows_neither_model_saw(registry: Registry) -> None:
    run_state_machine_as_test(lambda: CrossHoldoutMachine(registry), settings=REGISTRY)
