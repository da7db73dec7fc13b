"""The request contract: the fast path never passes what pandera refuses, and returns what pandera returns."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pandera.errors import SchemaErrors

from tasks.serve_request import BadRequest, fast_validate, records_of, request_schema, validate_request
from tasks.settings import TrainingConfig, load_config

REPO = Path(__file__).resolve().parents[2]
GOOD: dict[str, Any] = {
    "time_hour": "2013-05-01T12:00:00Z", "carrier": "UA", "flight": 1545, "origin": "EWR", "dest": "IAH",
    "distance": 1400, "hour": 12, "minute": 0, "sched_arr_time": 1500, "temp": 60.0, "dewp": 40.0, "humid": 50.0,
    "wind_dir": 200.0, "wind_speed": 10.0, "wind_gust": None, "precip": 0.0, "pressure": 1013.0, "visib": 10.0,
}  # fmt: skip


@pytest.fixture(scope="module")
def config() -> TrainingConfig:
    return load_config(REPO / "configs" / "flights.yaml")


# what a client may put in any field: right, wrong, odd
VALUES = st.one_of(
    st.none(),
    st.integers(-100_000, 100_000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["UA", "ZZ", "EWR", "XYZ", "", "12", "1e3", "abc", "2013-05-01T12:00:00Z", "2013-05-01", "May 1"]),
    st.booleans(),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    changes=st.dictionaries(st.sampled_from(sorted(GOOD)), VALUES | st.just("<drop>"), max_size=4),
    rows=st.integers(1, 3),
)
def test_the_fast_path_agrees_with_pandera(config: TrainingConfig, changes: dict[str, Any], rows: int) -> None:
    record = {k: v for k, v in {**GOOD, **changes}.items() if v != "<drop>"}
    frame = pd.DataFrame([record] * rows)
    schema = request_schema(config)
    from tasks.derive import DeriveError, derive_columns

    try:
        derived = derive_columns(config, frame)
    except DeriveError:
        return
    fast = fast_validate(schema, derived)
    if fast is None:
        return  # pandera decides: nothing to compare
    try:
        slow = schema.validate(derived, lazy=True)
    except SchemaErrors as error:
        raise AssertionError(f"the fast path passed what pandera refuses: {record}\n{error.failure_cases}") from error
    pd.testing.assert_frame_equal(fast[slow.columns], slow, check_dtype=True)


def test_a_good_record_takes_the_fast_path(config: TrainingConfig) -> None:
    # else every request pays pandera's ~20 ms and the test above compares nothing
    from tasks.derive import derive_columns

    assert fast_validate(request_schema(config), derive_columns(config, pd.DataFrame([GOOD]))) is not None


def test_every_problem_is_named_at_once(config: TrainingConfig) -> None:
    bad = {**GOOD, "origin": "XYZ", "distance": "far", "temp": math.inf}
    del bad["dest"]
    with pytest.raises(BadRequest) as raised:
        validate_request(config, records_of(bad, 10), request_schema(config))
    named = {(p.field, p.rule.split("(")[0]) for p in raised.value.problems}
    assert named == {
        ("origin", "isin"),
        ("distance", "coerce_dtype"),
        ("temp", "finite"),
        ("temp", "less_than_or_equal_to"),
        ("dest", "column is missing"),
    }


@pytest.mark.parametrize(
    ("body", "rule"),
    [
        ([], "no records"),
        ({"records": "x"}, "must be a list"),
        ("text", "JSON object"),
        ([GOOD, 1], "every record must be a JSON object"),
        ({"dataframe_split": {"columns": ["a"]}}, "needs 'columns'"),
        ({"dataframe_split": {"columns": ["a", "b"], "data": [[1]]}}, "list of 2 values"),
        ([GOOD] * 11, "at most 10"),
    ],
)
def test_request_shapes_we_do_not_take_are_refused_with_the_reason(body: Any, rule: str) -> None:
    with pytest.raises(BadRequest, match=rule):
        records_of(body, 10)


def test_mlflow_shapes_give_the_same_rows() -> None:
    columns = list(GOOD)
    split = {"dataframe_split": {"columns": columns, "data": [[GOOD[c] for c in columns]] * 2}}
    plain = records_of([GOOD, GOOD], 10)
    pd.testing.assert_frame_equal(records_of(split, 10), plain)
    pd.testing.assert_frame_equal(records_of({"dataframe_records": [GOOD, GOOD]}, 10), plain)
    pd.testing.assert_frame_equal(records_of(GOOD, 10), plain.head(1))


def test_a_timestamp_spelled_nat_is_left_to_pandera(config: TrainingConfig) -> None:
    # "NaT" is a str, and parses to a null timestamp, which the contract does not allow
    from tasks.derive import derive_columns

    schema = request_schema(config)
    derived = derive_columns(config, pd.DataFrame([GOOD]))
    derived["time_hour"] = "NaT"
    assert fast_validate(schema, derived) is None
    with pytest.raises(SchemaErrors):
        schema.validate(derived, lazy=True)
