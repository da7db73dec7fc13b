"""Drift thresholds from the data's own noise: what chance gives at the monitoring window's size.

A normed Wasserstein distance of 0.1 means one thing for a feature that swings with the weather
and another for one that never moves, and one thing at 500 rows and another at 50,000. So no
threshold needs setting by hand: at training, the reference window is resampled into pairs of
pseudo-windows that come from the reference's own process by construction (a "current" of
`monitoring.window_days` days and a "reference" of the reference window's length), and each
statistic's distribution over those pairs is its null: what a check sees when nothing changed.

Resampling: a circular block bootstrap over calendar days, blocks of round(D ** (1/3)) days for a
D-day reference (the usual rate for block length, Hall, Horowitz & Jing 1995). Days keep their
pattern within the day and short spells (a two-day storm) stay together, which resampling rows
would break, and so understate the noise. A pseudo-window has the reference's sampling rate, so
where the reference was sampled down the noise is overstated: thresholds err towards quiet.

Statistics, per feature, on Evidently's own scales (tests/unit/test_drift_null.py holds them to
Evidently's functions): the drift distance (Wasserstein normed by the reference's standard
deviation for numbers, Jensen-Shannon with the natural log for categories; missing values
dropped), the change in the null rate, and for categories the share of current rows whose value
the reference never had. A feature is flagged when any of them reaches its threshold, the
(1 - false_alarm_rate) quantile of its null, or for the two rates also `min_rate_change`.

One decision at a family-wise rate: the three signals a threshold decides here (feature drift,
prediction drift, label drift) and the performance drop's confidence bound share
`false_alarm_rate` equally (Bonferroni). Feature drift is
either of two rules, each with half of its share: `min_drifted` flagged features, the smallest
count that the null pairs reach in at most that share of draws, which keeps the features'
correlation (weather columns move together, where a binomial count would assume they do not); or
one feature far enough past its threshold that no null pair had any feature as far (`alone_ratio`,
the quantile of each pair's largest score-to-threshold ratio: the max-T rule of Westfall & Young),
so a single column that moved a lot is not outvoted by the quiet ones. The prediction's null uses
the rows that carry an out-of-sample prediction (the holdout), the label's the labelled rows.

Pure numpy and pandas: each sample is a vector of category counts (`np.bincount` over codes made
once), so a draw costs O(rows) per column with no sorting.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tasks.settings import TrainingConfig

NULL_ARTIFACT = "reference/drift_null.json"  # where the training run stores its null, beside the reference
# feature drift, prediction drift, label drift, and the performance drop's bound (tasks/drift.py):
# the four signals share the false-alarm rate
SIGNALS_DECIDED_HERE = 4
MIN_STD = 0.001  # Evidently's floor for the Wasserstein norm
MIN_DISTANCE = 1e-6  # a feature that never moved in the reference still needs a change to drift


@dataclass(frozen=True)
class NullThresholds:
    """What chance gives per statistic at the monitoring window's size; stored with the model."""

    draws: int
    window_days: int
    block_days: int
    reference_days: int
    false_alarm_rate: float
    distance: dict[str, float]
    null_rate: dict[str, float]
    unseen: dict[str, float]
    min_drifted: int
    alone_ratio: float = math.inf  # one feature at this multiple of its threshold is feature drift alone
    prediction: float | None = None
    label: float | None = None
    # share of null draws reaching each count of flagged features (index = count), for the report
    count_tail: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NullThresholds:
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        return cls(**known)

    @property
    def min_drifted_share(self) -> float:
        """`min_drifted` as a share of the features, the form the share rule is reported in."""
        return self.min_drifted / max(1, len(self.distance))


# --------------------------------------------------------------------------- encoding


@dataclass(frozen=True)
class Encoded:
    """One column as integer codes (-1 = missing) over its sorted support (numbers) or categories."""

    codes: np.ndarray
    numeric: bool
    support: np.ndarray  # numbers: sorted unique finite values; categories: the category labels
    rows: int

    @property
    def size(self) -> int:
        return len(self.support)


def encode(values: pd.Series, numeric: bool) -> Encoded:
    """Numbers as Evidently reads them (coerced to float, NaN and inf missing); categories as text."""
    if numeric:
        floats = pd.to_numeric(values, errors="coerce").astype(float).to_numpy()
        finite = np.isfinite(floats)
        support, inverse = np.unique(floats[finite], return_inverse=True)  # one sort gives both
        codes = np.full(len(floats), -1, dtype=np.int64)
        codes[finite] = inverse
        return Encoded(codes, True, support, len(floats))
    text = values.astype(object).where(values.isna(), values.astype(str))
    codes, uniques = pd.factorize(text, use_na_sentinel=True)
    return Encoded(np.asarray(codes, dtype=np.int64), False, np.asarray(uniques, dtype=object), len(text))


def counts(column: Encoded, rows: np.ndarray | slice | None = None) -> tuple[np.ndarray, int]:
    """(count per support value, rows including missing) of the column, or of the given rows."""
    codes = column.codes if rows is None else column.codes[rows]
    present = codes[codes >= 0]
    return np.bincount(present, minlength=column.size).astype(float), len(codes)


# --------------------------------------------------------------------------- statistics on counts


def distance(column: Encoded, reference: np.ndarray, current: np.ndarray) -> float:
    """Evidently's drift distance from two count vectors over the same support; NaN if a side is empty."""
    ref_total, cur_total = reference.sum(), current.sum()
    if ref_total == 0 or cur_total == 0:
        return math.nan
    if column.numeric:
        x = column.support
        mean = float((reference * x).sum() / ref_total)
        std = math.sqrt(max(0.0, float((reference * (x - mean) ** 2).sum() / ref_total)))
        gaps = np.diff(x)
        cdf_gap = np.abs(np.cumsum(reference)[:-1] / ref_total - np.cumsum(current)[:-1] / cur_total)
        return float((cdf_gap * gaps).sum() / max(std, MIN_STD))
    p, q = reference / ref_total, current / cur_total
    m = (p + q) / 2
    return math.sqrt(max(0.0, (_kl(p, m) + _kl(q, m)) / 2))


def _kl(p: np.ndarray, m: np.ndarray) -> float:
    nonzero = p > 0
    return float((p[nonzero] * np.log(p[nonzero] / m[nonzero])).sum())


def null_rate_change(reference: tuple[np.ndarray, int], current: tuple[np.ndarray, int]) -> float:
    """|null rate of current - null rate of reference|, from (counts, rows) pairs."""
    (ref_counts, ref_rows), (cur_counts, cur_rows) = reference, current
    if ref_rows == 0 or cur_rows == 0:
        return math.nan
    return abs((1 - cur_counts.sum() / cur_rows) - (1 - ref_counts.sum() / ref_rows))


def unseen_share(reference: np.ndarray, current: np.ndarray) -> float:
    """Share of current non-missing rows whose category has no row in the reference."""
    total = current.sum()
    return float(current[reference == 0].sum() / total) if total else math.nan


# --------------------------------------------------------------------------- resampling days


@dataclass(frozen=True)
class DayBlocks:
    """Row indices grouped by calendar day, to draw pseudo-windows of whole days from."""

    order: np.ndarray  # row indices sorted by day
    starts: np.ndarray  # order[starts[d]:starts[d + 1]] are day d's rows
    days: int
    block: int

    @classmethod
    def of(cls, timestamps: pd.Series) -> DayBlocks:
        moments = pd.to_datetime(timestamps, utc=True)
        if moments.isna().any():
            raise ValueError("the reference has rows without a timestamp: its days cannot be resampled")
        day = ((moments.dt.normalize() - moments.min().normalize()).dt.days).to_numpy()
        days = int(day.max()) + 1 if len(day) else 1
        order = np.argsort(day, kind="stable")
        starts = np.searchsorted(day[order], np.arange(days + 1))
        return cls(order=order, starts=starts, days=days, block=max(1, round(days ** (1 / 3))))

    def sample(self, rng: np.random.Generator, length_days: int) -> np.ndarray:
        """Row indices of `length_days` days: circular blocks of `block` days from random starts."""
        blocks = math.ceil(length_days / self.block)
        first = rng.integers(0, self.days, size=blocks)
        days = ((first[:, None] + np.arange(self.block)) % self.days).ravel()[:length_days]
        lengths = self.starts[days + 1] - self.starts[days]
        offsets = np.repeat(self.starts[days] - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
        return self.order[np.arange(int(lengths.sum())) + offsets]


# --------------------------------------------------------------------------- calibration


def calibrate(
    reference: pd.DataFrame,
    config: TrainingConfig,
    prediction_column: str = "prediction",
) -> NullThresholds:
    """The null of every statistic a check measures, drawn from the reference itself."""
    policy = config.monitoring
    rng = np.random.default_rng(config.tuning.seed)
    alpha = policy.false_alarm_rate
    signal_alpha = alpha / SIGNALS_DECIDED_HERE
    window = policy.window_days
    features = config.features.all
    numeric = set(config.features.numeric)
    if config.timestamp not in reference.columns:
        raise ValueError(
            f"the reference sample has no timestamp column {config.timestamp!r}, so its days cannot be "
            "resampled into a drift null; fix monitoring.column_threshold, drifted_share and "
            "prediction_threshold to check this model without one"
        )
    blocks = DayBlocks.of(reference[config.timestamp])

    encoded = {c: encode(reference[c], c in numeric) for c in features if c in reference.columns}
    dist = np.full((policy.null_draws, len(features)), np.nan)
    nulls = np.full_like(dist, np.nan)
    unseen = np.full_like(dist, np.nan)
    for draw in range(policy.null_draws):
        current_rows = blocks.sample(rng, window)
        reference_rows = blocks.sample(rng, blocks.days)
        for j, column in enumerate(features):
            if column not in encoded:
                continue
            ref, cur = counts(encoded[column], reference_rows), counts(encoded[column], current_rows)
            dist[draw, j] = distance(encoded[column], ref[0], cur[0])
            nulls[draw, j] = null_rate_change(ref, cur)
            if not encoded[column].numeric:
                unseen[draw, j] = unseen_share(ref[0], cur[0])

    distance_at = _quantiles(dist, 1 - alpha, MIN_DISTANCE)
    null_at = _quantiles(nulls, 1 - alpha, policy.min_rate_change)
    unseen_at = _quantiles(unseen, 1 - alpha, policy.min_rate_change)
    flagged = (
        (dist >= distance_at) | (nulls >= null_at) | (unseen >= unseen_at)
    )  # NaN compares False: an unmeasurable draw flags nothing
    count_tail = [float((flagged.sum(axis=1) >= m).mean()) for m in range(len(features) + 1)]
    rule_alpha = signal_alpha / 2  # feature drift has two rules: the count and the lone feature
    min_drifted = next((m for m in range(1, len(features) + 1) if count_tail[m] <= rule_alpha), len(features))
    with np.errstate(invalid="ignore"):
        largest_ratio = np.nanmax(np.where(np.isfinite(dist), dist / distance_at, -np.inf), axis=1)
    alone_ratio = max(1.0, float(np.quantile(largest_ratio, 1 - rule_alpha))) if len(features) else math.inf

    categorical = [c for c in features if c not in numeric]
    return NullThresholds(
        draws=policy.null_draws,
        window_days=window,
        block_days=blocks.block,
        reference_days=blocks.days,
        false_alarm_rate=alpha,
        distance=dict(zip(features, map(float, distance_at), strict=True)),
        null_rate=dict(zip(features, map(float, null_at), strict=True)),
        unseen={c: float(u) for c, u in zip(features, unseen_at, strict=True) if c in categorical},
        min_drifted=int(min_drifted),
        alone_ratio=alone_ratio,
        prediction=_single_null(reference, config, prediction_column, config.task != "multiclass", signal_alpha),
        label=_single_null(reference, config, config.target, config.task == "regression", signal_alpha),
        count_tail=count_tail,
    )


def _quantiles(draws: np.ndarray, level: float, floor: float) -> np.ndarray:
    """Per column: the `level` quantile of its finite draws, at least `floor`; 1.0 when none is finite."""
    out = np.empty(draws.shape[1])
    for j in range(draws.shape[1]):
        finite = draws[:, j][np.isfinite(draws[:, j])]
        out[j] = max(float(np.quantile(finite, level)), floor) if len(finite) else 1.0
    return out


def _single_null(
    reference: pd.DataFrame, config: TrainingConfig, column: str, numeric: bool, level: float
) -> float | None:
    """The drift-distance threshold of one column measured on its own rows (prediction, label)."""
    if column not in reference.columns or not reference[column].notna().any():
        return None
    rows = reference[reference[column].notna()]
    blocks = DayBlocks.of(rows[config.timestamp])
    encoded = encode(rows[column], numeric)
    rng = np.random.default_rng(config.tuning.seed + 1)
    draws = np.array(
        [
            distance(
                encoded,
                counts(encoded, blocks.sample(rng, blocks.days))[0],
                counts(encoded, blocks.sample(rng, config.monitoring.window_days))[0],
            )
            for _ in range(config.monitoring.null_draws)
        ]
    )
    return float(_quantiles(draws[:, None], 1 - level, MIN_DISTANCE)[0])


@dataclass(frozen=True)
class Compared:
    """One column of a real check: its drift distance and the two rate statistics, on every row."""

    distance: float
    null_rate_change: float
    unseen_share: float  # NaN for numbers


def compare(reference: pd.Series, current: pd.Series, numeric: bool) -> Compared:
    """The statistics a check decides on, from one encoding of both sides over their pooled support.

    Vectorised and exact (Evidently's formulas, not a sample): one sort or factorisation of the
    pooled column, then counts; ~O(rows log rows) per column.
    """
    both = encode(pd.concat([reference, current], ignore_index=True), numeric)
    split = len(reference)
    ref, cur = counts(both, slice(None, split)), counts(both, slice(split, None))
    return Compared(
        distance=distance(both, ref[0], cur[0]),
        null_rate_change=null_rate_change(ref, cur),
        unseen_share=math.nan if numeric else unseen_share(ref[0], cur[0]),
    )
