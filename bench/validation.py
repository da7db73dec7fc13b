"""Validation throughput: our Pandera schema and GX suite against vectorised numpy checks of the same rules.

A synthetic batch of 15 numeric and 5 categorical features (plus timestamp, binary label and row
key) under a contract of every rule kind the config can state: bounds, closed category sets, null
ratios, finiteness, the label's values, row count, a unique key and mean bounds. Ours is
`tasks.validate.check_frame` (Pandera, then Great Expectations), warmed up once so GX's import
and context are not counted; the limit is the same rules as numpy array operations. Both run on a
clean batch, alternating, and both must find the same broken rules on a batch with one fault of
each kind planted, or the comparison means nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.timing import median
from tasks.settings import TrainingConfig, load_config
from tasks.validate import check_frame

NUMERIC = [f"x{i}" for i in range(15)]
CATEGORICAL = [f"c{i}" for i in range(5)]
CATEGORIES = [f"v{i}" for i in range(20)]
NULLABLE = NUMERIC[:5]  # these may be missing up to MAX_NULL of their rows
MAX_NULL = 0.10
MEAN_BOUNDED = NUMERIC[5:10]


def contract(base: TrainingConfig) -> TrainingConfig:
    """`base` with the synthetic batch's features and a rule of every kind on them."""
    columns: dict[str, dict[str, Any]] = {name: {"min": -10.0, "max": 110.0} for name in NUMERIC}
    for name in NULLABLE:
        columns[name]["max_null_ratio"] = MAX_NULL
    columns.update({name: {"allowed": CATEGORIES} for name in CATEGORICAL})
    raw = base.model_dump(mode="json")
    raw.update(
        name="synthetic",
        model_name="synthetic-model",
        source={"kind": "files", "path": "unused"},
        timestamp="ts",
        target="label",
        task="binary",
        derive=[],
        leakage=[],
        features={"numeric": NUMERIC, "categorical": CATEGORICAL},
        validation={
            "min_rows": 1000,
            "max_rows": 10_000_000,
            "unique_key": ["row_id"],
            "columns": columns,
            "mean_bounds": {name: [40.0, 60.0] for name in MEAN_BOUNDED} | {"label": [0.05, 0.95]},
        },
        slices=[],
        fairness={},  # no sensitive column: fairness is reported for none
        replay=None,
    )
    return TrainingConfig.model_validate(raw)


def clean_batch(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({name: rng.uniform(0, 100, rows) for name in NUMERIC})
    for name in NULLABLE:
        frame.loc[rng.random(rows) < MAX_NULL / 2, name] = np.nan
    for name in CATEGORICAL:
        frame[name] = np.asarray(CATEGORIES, dtype=object)[rng.integers(0, len(CATEGORIES), rows)]
    frame["ts"] = pd.Timestamp("2020-01-01", tz="UTC") + pd.to_timedelta(np.arange(rows), unit="s")
    frame["label"] = rng.integers(0, 2, rows).astype(float)
    frame["row_id"] = np.arange(rows)
    return frame


def faulty_batch(rows: int) -> tuple[pd.DataFrame, set[tuple[str, str]]]:
    """A clean batch with one fault of each kind, and the (column, rule kind) each must be reported as."""
    frame = clean_batch(rows, seed=1)
    frame.loc[:9, "x10"] = 500.0  # above its max
    frame.loc[10:19, "x11"] = np.inf  # not finite (and so above its max)
    frame.loc[20:29, "c0"] = "never-seen"  # outside the closed set
    frame.loc[: int(rows * 0.3), "x0"] = np.nan  # null surge past MAX_NULL
    frame.loc[30:39, "label"] = 3.0  # not a binary label
    frame.loc[40:49, "row_id"] = 0  # duplicate keys
    frame["x5"] = frame["x5"] * 0.5 + 50  # inside its range, its mean (75) out of its bounds
    expected = {
        ("x10", "range"), ("x11", "finite"), ("x11", "range"), ("c0", "allowed"), ("x0", "null ratio"),
        ("label", "label"), ("row_id", "unique"), ("x5", "mean"),
    }  # fmt: skip
    return frame, expected


def rule_kind(rule: str) -> str:
    """Our failure's rule name, in the limit's vocabulary."""
    for marker, kind in [
        ("greater_than_or_equal", "range"), ("less_than_or_equal", "range"), ("finite", "finite"),
        ("max_null_ratio", "null ratio"), ("unique", "unique"), ("mean", "mean"),
    ]:  # fmt: skip
        if marker in rule:
            return kind
    return "allowed-or-label" if "isin" in rule else rule


def limit_failures(frame: pd.DataFrame, config: TrainingConfig) -> set[tuple[str, str]]:
    """The same rules as numpy array operations: (column, rule kind) for every rule broken."""
    rules, found = config.validation, set()
    if not rules.min_rows <= len(frame) <= rules.max_rows:
        found.add(("", "row count"))
    for name in NUMERIC:
        values = frame[name].to_numpy(dtype=np.float64)
        missing = np.isnan(values)
        if (values[~missing] < -10.0).any() or (values[~missing] > 110.0).any():
            found.add((name, "range"))
        if np.isinf(values).any():
            found.add((name, "finite"))
        allowed_null = MAX_NULL if name in NULLABLE else 0.0
        if missing.mean() > allowed_null:
            found.add((name, "null ratio"))
    allowed = np.asarray(CATEGORIES, dtype=object)
    for name in CATEGORICAL:
        values = frame[name].to_numpy(dtype=object)
        if not np.isin(values, allowed).all():
            found.add((name, "allowed"))
    labels = frame["label"].to_numpy(dtype=np.float64)
    if not np.isin(labels, [0.0, 1.0]).all():
        found.add(("label", "label"))
    keys = frame["row_id"].to_numpy()
    if np.unique(keys).size != keys.size:
        found.add(("row_id", "unique"))
    for name, (low, high) in rules.mean_bounds.items():
        mean = np.nanmean(frame[name].to_numpy(dtype=np.float64))
        if not low <= mean <= high:
            found.add((name, "mean"))
    if frame["ts"].isna().to_numpy().any():
        found.add(("ts", "null"))
    return found


def our_failures(frame: pd.DataFrame, config: TrainingConfig) -> set[tuple[str, str]]:
    _, failures = check_frame(config, frame, "synthetic")
    found = set()
    for failure in failures:
        kind = rule_kind(failure.rule)
        if kind == "allowed-or-label":
            kind = "label" if failure.column == "label" else "allowed"
        found.add((failure.column or "", kind))
    return found


@dataclass(frozen=True)
class Throughput:
    rows: int
    ours: list[float]
    limit: list[float]
    ours_found: set[tuple[str, str]]
    limit_found: set[tuple[str, str]]
    expected: set[tuple[str, str]]

    @property
    def ratios(self) -> list[float]:
        return [a / b for a, b in zip(self.ours, self.limit, strict=True)]


def _seconds(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def measure(base: Path, rows: int, repeats: int) -> Throughput:
    config = contract(load_config(base))
    our_failures(clean_batch(2000), config)  # GX's import and context, once per process
    frame = clean_batch(rows)
    ours, limit = [], []
    for _ in range(repeats):
        ours.append(_seconds(lambda: check_frame(config, frame, "synthetic")))
        limit.append(_seconds(lambda: limit_failures(frame, config)))
    faulty, expected = faulty_batch(rows)
    return Throughput(rows, ours, limit, our_failures(faulty, config), limit_failures(faulty, config), expected)


def markdown(result: Throughput, repeats: int) -> str:
    agree = result.ours_found == result.limit_found == result.expected
    lines = [
        "## 4. Validation throughput: Pandera schema + GX suite against numpy checks of the same rules",
        "",
        f"A synthetic batch of {result.rows:,} rows x 20 features (15 numeric, 5 categorical of 20 values; plus a",
        "timestamp, a binary label and a row key) under a rule of every kind the config can state. Ours is",
        "`check_frame` (GX imported and its context built beforehand); the limit is the same rules as numpy",
        f"array operations. Seconds on the clean batch, median (min-max) of {repeats} alternating runs.",
        "",
        "| rows | ours (Pandera + GX) | limit (numpy) | ours / limit |",
        "| --- | --- | --- | --- |",
        f"| {result.rows:,} | {median(result.ours):.2f} ({min(result.ours):.2f}-{max(result.ours):.2f}) "
        f"| {median(result.limit):.2f} ({min(result.limit):.2f}-{max(result.limit):.2f}) "
        f"| {median(result.ratios):.1f}x |",
        "",
        "On a batch with one fault of each kind planted, the broken rules each side reported "
        + ("agree with each other and with what was planted: " if agree else "**disagree**: ")
        + f"ours {sorted(result.ours_found)}; limit {sorted(result.limit_found)}; planted {sorted(result.expected)}.",
    ]
    return "\n".join(lines) + "\n"


def run(base: Path, rows: int, repeats: int) -> str:
    return markdown(measure(base, rows, repeats), repeats)


if __name__ == "__main__":
    print(run(Path("configs/flights.yaml"), rows=20_000, repeats=2))
