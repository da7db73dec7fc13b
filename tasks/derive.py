"""Derived columns: computed on read from the config's `derive:` list, row by row, for every source.

Pure: a frame in, a new frame out (the input is never changed). Each derivation depends only on
the row it is computed for, so a row gets the same value in whatever batch or window it is read,
and computing it again on an already derived frame changes nothing. A derived column replaces a
column of the same name. Validation (tasks/validate.py) runs after this, on the derived frame.
"""

from __future__ import annotations

import pandas as pd

from tasks.settings import DerivedColumn, RandomTime, TimestampFromOffsets, TrainingConfig

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
        out[derived.name] = derive_one(derived, out)
    return out


def derive_one(derived: DerivedColumn, frame: pd.DataFrame) -> pd.Series:
    if isinstance(derived, TimestampFromOffsets):
        return _timestamp(derived, frame)
    return _random_time(derived, frame)


def _inputs(derived: DerivedColumn, frame: pd.DataFrame, columns: list[str]) -> None:
    if missing := [c for c in columns if c not in frame.columns]:
        raise DeriveError(derived.name, derived.op, f"input column(s) missing: {missing}")


def _numbers(derived: DerivedColumn, frame: pd.DataFrame, column: str) -> pd.Series:
    values = pd.to_numeric(frame[column], errors="coerce")
    if bad := int((values.isna() & frame[column].notna()).sum()):
        raise DeriveError(derived.name, derived.op, f"{bad} value(s) of {column!r} are not numbers")
    return values


def _timestamp(derived: TimestampFromOffsets, frame: pd.DataFrame) -> pd.Series:
    columns = [derived.days, *([derived.hours] if derived.hours else [])]
    _inputs(derived, frame, columns)
    stamp = pd.Timestamp(derived.origin, tz="UTC") + pd.to_timedelta(_numbers(derived, frame, derived.days), unit="D")
    if derived.hours:
        stamp = stamp + pd.to_timedelta(_numbers(derived, frame, derived.hours), unit="h")
    return pd.Series(stamp, index=frame.index, name=derived.name)


def _random_time(derived: RandomTime, frame: pd.DataFrame) -> pd.Series:
    """Uniform over [start, end) by a seeded hash of the key.

    The key is hashed as text, so a CSV and a Parquet copy of the same row (whose dtypes may differ)
    get the same instant.
    """
    _inputs(derived, frame, derived.key)
    hash_key = f"driftloop{derived.seed:07d}"[-16:]
    hashed = pd.util.hash_pandas_object(frame[derived.key].astype(str), index=False, hash_key=hash_key)
    start, end = pd.Timestamp(derived.start, tz="UTC"), pd.Timestamp(derived.end, tz="UTC")
    offsets = pd.to_timedelta((hashed.to_numpy(dtype="float64") / _HASH_SPAN) * (end - start).total_seconds(), "s")
    return pd.Series(start + offsets, index=frame.index, name=derived.name).dt.floor("s")
