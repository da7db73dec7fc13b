"""What an online request may hold, and every way it can be wrong: parsing and validation, no HTTP.

A request is rows of the scoring contract (tasks/validate.py `build_schema(require_target=False,
per_row=True)`): the timestamp, the row key (so delayed labels can join the logged answer) and the
features, derived as a batch would be. Every problem is named by field and rule, all at once.

Pandera decides, but it costs ~20 ms a call whatever the size of the request, most of a single
record's answer. So `fast_validate` first reads the same schema object's own rules (dtype,
nullability, presence, bounds, allowed sets, finiteness) on each column's numpy values (~1 ms a
request; through pandas Series it was ~4 ms, a third of a single record's answer, BENCHMARKS.md
section 9); only a request it cannot vouch for (a broken rule, an unusual dtype, a rule it does not
know) goes through pandera, whose verdict and messages are the ones returned. It never passes what
pandera would refuse (tests/unit/test_serve_request.py draws requests to check it).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from tasks.derive import DeriveError, derive_columns
from tasks.settings import TrainingConfig
from tasks.validate import FINITE, build_schema, schema_failures

REQUEST = "request"  # the "file" a failure names


@dataclasses.dataclass(frozen=True)
class Problem:
    """One broken rule of a request: which field (None: the request as a whole), which rule, where."""

    field: str | None
    rule: str
    rows: int | None = None
    examples: list[Any] = dataclasses.field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class BadRequest(ValueError):
    """A request refused with every problem found (HTTP 422)."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{p.field or 'request'}: {p.rule}" for p in problems))


def records_of(body: Any, max_rows: int) -> pd.DataFrame:
    """The rows of a parsed JSON body, as a frame; BadRequest when its shape is not one we take.

    Accepted: one record (an object), a list of records, `{"records": [...]}`, and MLflow's
    `{"dataframe_records": [...]}` and `{"dataframe_split": {"columns": [...], "data": [[...]]}}`, so
    clients of `mlflow models serve` work unchanged.
    """
    records: Any
    if isinstance(body, list):
        records = body
    elif isinstance(body, dict) and "dataframe_split" in body:
        return _split_frame(body["dataframe_split"], max_rows)
    elif isinstance(body, dict) and ("records" in body or "dataframe_records" in body):
        records = body.get("records", body.get("dataframe_records"))
        if not isinstance(records, list):
            raise BadRequest([Problem("records", "must be a list of records (JSON objects)")])
    elif isinstance(body, dict):
        records = [body]
    else:
        raise BadRequest([Problem(None, "the body must be a JSON object (one record) or a list of records")])
    _check_size(len(records), max_rows)
    bad = [i for i, record in enumerate(records) if not isinstance(record, dict)]
    if bad:
        raise BadRequest([Problem(None, "every record must be a JSON object", len(bad), bad[:5])])
    return pd.DataFrame.from_records(records)


def _split_frame(split: Any, max_rows: int) -> pd.DataFrame:
    if (
        not isinstance(split, dict)
        or not isinstance(split.get("columns"), list)
        or not isinstance(split.get("data"), list)
    ):
        raise BadRequest([Problem("dataframe_split", "needs 'columns' (a list of names) and 'data' (a list of rows)")])
    columns, data = split["columns"], split["data"]
    _check_size(len(data), max_rows)
    wrong = [i for i, row in enumerate(data) if not isinstance(row, list) or len(row) != len(columns)]
    if wrong:
        raise BadRequest(
            [Problem("dataframe_split", f"every row must be a list of {len(columns)} values", len(wrong), wrong[:5])]
        )
    return pd.DataFrame(data, columns=columns)


def _check_size(rows: int, max_rows: int) -> None:
    if rows == 0:
        raise BadRequest([Problem(None, "no records: send at least one")])
    if rows > max_rows:
        raise BadRequest([Problem(None, f"{rows} records: at most {max_rows} per request (serving.max_batch_rows)")])


def request_schema(config: TrainingConfig) -> pa.DataFrameSchema:
    """The contract of a request's rows; build it once per service, it is the same for every call."""
    return build_schema(config, require_target=False, per_row=True)


def validate_request(config: TrainingConfig, frame: pd.DataFrame, schema: pa.DataFrameSchema) -> pd.DataFrame:
    """The derived, coerced rows, ready to score; BadRequest naming every broken rule otherwise."""
    try:
        derived = derive_columns(config, frame)
    except DeriveError as error:
        raise BadRequest([Problem(error.column, f"derive {error.rule}: {error.problem}")]) from error
    fast = fast_validate(schema, derived)
    if fast is not None:
        return fast
    try:
        return schema.validate(derived, lazy=True)
    except SchemaErrors as error:
        failures = schema_failures(error, derived, REQUEST)
        raise BadRequest([Problem(f.column, f.rule, f.failing_rows, f.examples) for f in failures]) from error


_KNOWN = {"greater_than_or_equal_to", "less_than_or_equal_to", "greater_than", "less_than", "isin", "in_range"}


def fast_validate(schema: pa.DataFrameSchema, frame: pd.DataFrame) -> pd.DataFrame | None:
    """The frame as pandera would return it when every rule certainly holds; None when unsure.

    Reads the schema's own columns and checks, so the rules are written once. None (then pandera
    decides) for a missing column, a null where none is allowed, a value that breaks a rule, a
    dtype it would have to guess at, or a check it does not know. Works on each column's numpy
    values, not pandas Series (a request is mostly one row, where pandas' per-call cost is all of
    it), and only replaces the columns whose dtype the coercion changes.
    """
    if schema.checks or schema.unique or schema.strict:
        return None
    changed: dict[str, Any] = {}
    for name, column in schema.columns.items():
        if name not in frame.columns:
            if column.required:
                return None
            continue
        series = frame[name]
        kind = str(column.dtype) if column.dtype is not None else None
        if kind == "float64":
            values = _as_float(column, series)
            if values is None:
                return None
            present = ~np.isnan(values)
            if not _float_checks_hold(column.checks, values[present]):
                return None
            if series.dtype != np.float64:
                changed[name] = values
        elif kind == "str":
            present_or_none = _str_present(series)
            if present_or_none is None:
                return None
            present = present_or_none
            if not _str_checks_hold(column.checks, series.to_numpy()[present]):
                return None
        elif kind is not None and kind.startswith("datetime64[ns, UTC]") and column.coerce:
            stamps = _as_utc_stamps(series)
            if stamps is None or column.checks:
                return None
            present = stamps.notna().to_numpy()  # "NaT" is a str, and parses to one
            changed[name] = stamps
        elif kind is None:
            if column.checks:
                return None
            present = series.notna().to_numpy()
        else:
            return None
        if not column.nullable and not present.all():
            return None
    if not changed:
        return frame.copy(deep=False)
    out = frame.copy(deep=False)
    for name, values in changed.items():
        out[name] = values
    return out


def _as_float(column: pa.Column, values: pd.Series) -> np.ndarray | None:
    """The values as float64 (a copy) where pandera's coercion certainly gives the same; None otherwise."""
    dtype = values.dtype
    if not isinstance(dtype, np.dtype):
        return None  # a pandas extension dtype: pandera decides
    if column.coerce and dtype.kind in "fiu":
        return np.array(values.to_numpy(), dtype="float64")
    if dtype.kind == "O" and not values.notna().any():  # no value at all: nulls, as float
        return np.full(len(values), np.nan)
    return None


def _str_present(values: pd.Series) -> np.ndarray | None:
    """Which values are present, when every present one is a str (not a subclass); None otherwise."""
    if values.dtype != object:
        return None
    array = values.to_numpy()
    if all(type(v) is str for v in array):
        return np.ones(len(array), dtype=bool)
    present = ~pd.isna(array)
    return present if all(type(v) is str for v in array[present]) else None


def _as_utc_stamps(values: pd.Series) -> pd.Series | None:
    if values.dtype != object or not all(type(v) is str for v in values.to_numpy()):
        return None  # a null, a number, a parsed timestamp: pandera decides
    try:
        return pd.to_datetime(values, utc=True, format="ISO8601").astype("datetime64[ns, UTC]")
    except (ValueError, TypeError):
        return None


def _number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool | np.bool_)


def _float_checks_hold(checks: list[pa.Check], kept: np.ndarray) -> bool:
    """Every check holds on the present values of a float64 column (False: broken, or unknown here)."""
    for check in checks:
        if check._check_fn is FINITE._check_fn:  # pandera copies a check into each column: same function
            if not np.isfinite(kept).all():
                return False
            continue
        name, stats = check.name, check.statistics or {}
        if name not in _KNOWN or not check.ignore_na:
            return False
        if name == "isin":
            allowed = list(stats["allowed_values"])
            if not all(_number(v) for v in allowed) or not np.isin(kept, allowed).all():
                return False
            continue
        bounds = [stats[k] for k in ("min_value", "max_value") if k in stats]
        if not bounds or not all(_number(v) for v in bounds) or not _within(name, stats, kept):
            return False
    return True


def _within(name: str, stats: dict[str, Any], kept: np.ndarray) -> bool:
    if name == "greater_than_or_equal_to":
        return bool((kept >= stats["min_value"]).all())
    if name == "less_than_or_equal_to":
        return bool((kept <= stats["max_value"]).all())
    if name == "greater_than":
        return bool((kept > stats["min_value"]).all())
    if name == "less_than":
        return bool((kept < stats["max_value"]).all())
    low, high = stats["min_value"], stats["max_value"]
    lower = kept >= low if stats.get("include_min", True) else kept > low
    upper = kept <= high if stats.get("include_max", True) else kept < high
    return bool((lower & upper).all())


def _str_checks_hold(checks: list[pa.Check], kept: np.ndarray) -> bool:
    """Every check holds on the present values (all str) of a str column; only `isin` of str is known here."""
    for check in checks:
        stats = check.statistics or {}
        if check.name != "isin" or not check.ignore_na:
            return False
        allowed = stats["allowed_values"]
        if not all(type(v) is str for v in allowed):
            return False
        allowed_set = set(allowed)
        if not all(v in allowed_set for v in kept):
            return False
    return True
