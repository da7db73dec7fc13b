"""Derived columns: computed on read from the config's `derive:` list, row by row, for every source.

Pure: a frame in, a new frame out (the input is never changed). Each derivation depends only on
the row it is computed for, so a row gets the same value in whatever batch or window it is read,
and computing it again on an already derived frame changes nothing. A derived column replaces a
column of the same name. Validation (tasks/validate.py) runs after this, on the derived frame.

A derivation of the target is skipped when its inputs are absent: a batch to score arrives without
what is known only afterwards (the leakage columns), so it has no label to derive.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tasks.settings import (
    Above,
    DayOfWeek,
    DerivedColumn,
    MissingOutside,
    RandomTime,
    TimestampFromOffsets,
    TrainingConfig,
)

_HASH_SPAN = float(2**64)


class DeriveError(ValueError):
    """A derived column that cannot be computed from this frame, with the column and the reason."""

    def __init__(self, column: str, rule: str, problem: str) -> None:
        super().__init__(f"derived column {column!r} ({rule}): {problem}")
        self.column = column
        self.rule = rule
        self.problem = problem


def derive_columns(config: TrainingConfig, frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with every derived column of the config computed, in the order listed."""
    if not config.derive:
        return frame
    out = frame.copy()
    for derived in config.derive:
        missing = any(c not in out.columns for c in inputs_of(derived))
        # no label to derive in a batch to score; a repair of an absent column is the schema's "column is missing"
        if missing and (derived.name == config.target or isinstance(derived, MissingOutside)):
            continue
        out[derived.name] = derive_one(derived, out)
    return out


def inputs_of(derived: DerivedColumn) -> list[str]:
    """The columns a derivation reads."""
    if isinstance(derived, TimestampFromOffsets):
        return [derived.days, *([derived.hours] if derived.hours else [])]
    if isinstance(derived, RandomTime):
        return list(derived.key)
    if isinstance(derived, DayOfWeek):
        return [derived.timestamp]
    return [derived.column]


def derive_one(derived: DerivedColumn, frame: pd.DataFrame) -> pd.Series:
    _inputs(derived, frame, inputs_of(derived))
    if isinstance(derived, TimestampFromOffsets):
        return _timestamp(derived, frame)
    if isinstance(derived, RandomTime):
        return _random_time(derived, frame)
    if isinstance(derived, Above):
        return _above(derived, frame)
    if isinstance(derived, DayOfWeek):
        return _day_of_week(derived, frame)
    return _missing_outside(derived, frame)


def _inputs(derived: DerivedColumn, frame: pd.DataFrame, columns: list[str]) -> None:
    if missing := [c for c in columns if c not in frame.columns]:
        raise DeriveError(derived.name, derived.op, f"input column(s) missing: {missing}")


def _numbers(derived: DerivedColumn, frame: pd.DataFrame, column: str) -> pd.Series:
    values = pd.to_numeric(frame[column], errors="coerce")
    if bad := int((values.isna() & frame[column].notna()).sum()):
        raise DeriveError(derived.name, derived.op, f"{bad} value(s) of {column!r} are not numbers")
    return values


def _timestamp(derived: TimestampFromOffsets, frame: pd.DataFrame) -> pd.Series:
    stamp = pd.Timestamp(derived.origin, tz="UTC") + pd.to_timedelta(_numbers(derived, frame, derived.days), unit="D")
    if derived.hours:
        stamp = stamp + pd.to_timedelta(_numbers(derived, frame, derived.hours), unit="h")
    return pd.Series(stamp, index=frame.index, name=derived.name)


def _random_time(derived: RandomTime, frame: pd.DataFrame) -> pd.Series:
    """Uniform over [start, end) by a seeded hash of the key.

    The key is hashed as text, so a CSV and a Parquet copy of the same row (whose dtypes may differ)
    get the same instant.
    """
    hash_key = f"driftloop{derived.seed:07d}"[-16:]
    hashed = pd.util.hash_pandas_object(frame[derived.key].astype(str), index=False, hash_key=hash_key)
    start, end = pd.Timestamp(derived.start, tz="UTC"), pd.Timestamp(derived.end, tz="UTC")
    offsets = pd.to_timedelta((hashed.to_numpy(dtype="float64") / _HASH_SPAN) * (end - start).total_seconds(), "s")
    return pd.Series(start + offsets, index=frame.index, name=derived.name).dt.floor("s")


def _above(derived: Above, frame: pd.DataFrame) -> pd.Series:
    values = _numbers(derived, frame, derived.column)
    flag = (values > derived.threshold).astype("int64")
    return _with_missing(flag.where(values.notna()) if values.isna().any() else flag, derived.name)


def _day_of_week(derived: DayOfWeek, frame: pd.DataFrame) -> pd.Series:
    stamps = pd.to_datetime(frame[derived.timestamp], utc=True, errors="coerce")
    if bad := int((stamps.isna() & frame[derived.timestamp].notna()).sum()):
        raise DeriveError(derived.name, derived.op, f"{bad} value(s) of {derived.timestamp!r} are not timestamps")
    return _with_missing(stamps.dt.dayofweek, derived.name)


def _missing_outside(derived: MissingOutside, frame: pd.DataFrame) -> pd.Series:
    """Finite readings only: an infinity is no instrument reading, and the contract rejects it as such."""
    values = _numbers(derived, frame, derived.column).astype("float64")
    low = values < derived.min if derived.min is not None else False
    high = values > derived.max if derived.max is not None else False
    return values.mask((low | high) & np.isfinite(values)).rename(derived.name)


def _with_missing(values: pd.Series, name: str) -> pd.Series:
    """Whole numbers as int64, or float64 with NaN where an input was missing (as a file would read)."""
    return (values.astype("float64") if values.isna().any() else values.astype("int64")).rename(name)
