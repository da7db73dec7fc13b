"""What an online request may hold, and every way it can be wrong: parsing and validation, no HTTP.

A request is rows of the scoring contract (tasks/validate.py `build_schema(require_target=False,
per_row=True)`): the timestamp, the row key (so delayed labels can join the logged answer) and the
features, derived as a batch would be. Every problem is named by field and rule, all at once.

Pandera decides, but it costs ~20 ms a call whatever the size of the request, most of a single
record's answer. So `fast_validate` first reads the same schema object's own rules (dtype,
nullability, presence, bounds, allowed sets, finiteness) with plain pandas; only a request it cannot
vouch for (a broken rule, an unusual dtype, a rule it does not know) goes through pandera, whose
verdict and messages are the ones returned. It never passes what pandera would refuse
(tests/unit/test_serve_request.py draws requests to check it).
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
    dtype it would have to guess at, or a check it does not know.
    """
    if schema.checks or schema.unique or schema.strict:
        return None
    out = frame.copy(deep=False)
    for name, column in schema.columns.items():
        if name not in frame.columns:
            if column.required:
                return None
            continue
        values = _coerced(column, frame[name])
        if values is None:
            return None
        present = values.notna()
        if not column.nullable and not present.all():
            return None
        kept = values[present]
        for check in column.checks:
            if not _holds(check, kept):
                return None
        out[name] = values
    return out


def _coerced(column: pa.Column, values: pd.Series) -> pd.Series | None:
    kind = str(column.dtype) if column.dtype is not None else None
    if kind is None:
        return values
    if kind == "float64":
        if not column.coerce or not (pd.api.types.is_float_dtype(values) or pd.api.types.is_integer_dtype(values)):
            return None if values.dtype != object or values.notna().any() else values.astype("float64")
        return values.astype("float64")
    if kind == "str":
        if values.dtype != object:
            return None
        present = values[values.notna()]
        return values if all(type(v) is str for v in present) else None
    if kind.startswith("datetime64[ns, UTC]") and column.coerce:
        if values.isna().any() or values.dtype != object or not all(type(v) is str for v in values):
            return None
        try:
            return pd.to_datetime(values, utc=True, format="ISO8601").astype("datetime64[ns, UTC]")
        except (ValueError, TypeError):
            return None
    return None


def _holds(check: pa.Check, values: pd.Series) -> bool:
    if check._check_fn is FINITE._check_fn:  # pandera copies a check into each column: same function
        return bool(np.isfinite(values.to_numpy(dtype="float64")).all())
    name, stats = check.name, check.statistics or {}
    if name not in _KNOWN or not check.ignore_na:
        return False
    if name == "isin":
        return bool(values.isin(stats["allowed_values"]).all())
    if name == "greater_than_or_equal_to":
        return bool((values >= stats["min_value"]).all())
    if name == "less_than_or_equal_to":
        return bool((values <= stats["max_value"]).all())
    if name == "greater_than":
        return bool((values > stats["min_value"]).all())
    if name == "less_than":
        return bool((values < stats["max_value"]).all())
    low, high = stats["min_value"], stats["max_value"]
    lower = values >= low if stats.get("include_min", True) else values > low
    upper = values <= high if stats.get("include_max", True) else values < high
    return bool((lower & upper).all())
