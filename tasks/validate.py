"""Validate: every batch passes a Pandera schema and a Great Expectations suite, or is quarantined.

Both are derived from the dataset config, never hand-written per dataset:
- Pandera (row level, lazy so one run reports every failure): presence, dtype, ranges, closed
  category sets, null ratios, target values.
- Great Expectations (dataset level): row count, uniqueness of the row key, column means within
  bounds.

A failure is a `Failure(file, column, rule, failing_rows, examples)`; a rejected batch moves to
quarantine/ with those failures as JSON, and the run stops with a message naming each of them.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.derive import DeriveError, derive_columns
from tasks.ingest import BatchReadError, LandedBatch, in_window, parse_batch
from tasks.settings import TimeWindow, TrainingConfig
from tasks.stores import DataStore, Stores

MAX_EXAMPLES = 5


@dataclass(frozen=True)
class Failure:
    file: str
    column: str | None
    rule: str
    failing_rows: int | None
    examples: list[Any] = field(default_factory=list)

    def describe(self) -> str:
        where = f"column {self.column!r}" if self.column else "table"
        rows = f", {self.failing_rows} row(s)" if self.failing_rows is not None else ""
        examples = f", e.g. {self.examples}" if self.examples else ""
        return f"{self.file}: {where}: {self.rule}{rows}{examples}"


class BatchRejected(RuntimeError):
    """Raised when at least one batch failed validation; every failure is in the message."""

    def __init__(self, failures: list[Failure], quarantined: list[str]) -> None:
        self.failures = failures
        self.quarantined = quarantined
        lines = [f"{len(quarantined)} batch(es) rejected and quarantined ({len(failures)} failure(s)):"]
        lines += [f"  - {f.describe()}" for f in failures]
        lines += [f"  quarantined: {q}" for q in quarantined]
        super().__init__("\n".join(lines))


def null_ratio_check(limit: float) -> pa.Check:
    return pa.Check(
        # an empty batch has no null ratio; the row-count expectation reports it instead
        lambda series: bool(series.empty or series.isna().mean() <= limit),
        element_wise=False,
        ignore_na=False,
        name=f"max_null_ratio({limit})",
    )


FINITE = pa.Check(lambda series: ~np.isinf(series), ignore_na=True, name="finite")


def build_schema(config: TrainingConfig, *, require_target: bool = True, per_row: bool = False) -> pa.DataFrameSchema:
    """The row-level contract of a batch, from the config alone.

    `per_row=True` is the contract of an online request (flows/serve.py): every rule a single row
    can break, and none of a batch's shares: a null passes wherever the config allows any nulls,
    since a null ratio is a property of many rows, which monitoring judges on the inference log.

    `require_target=False` is the contract of a batch to score, whose labels arrive later: the
    target may be absent, and where present it is checked as usual but may be null; the row-key
    columns (`validation.unique_key`) must then be present and non-null, since the inference log
    joins the delayed labels on them.
    """
    rules = config.validation.columns
    columns: dict[str, pa.Column] = {}
    for name in [*config.features.all, config.target]:
        rule = rules.get(name)
        checks: list[pa.Check] = []
        max_null = rule.max_null_ratio if rule else 0.0
        if rule and rule.min is not None:
            checks.append(pa.Check.ge(rule.min))
        if rule and rule.max is not None:
            checks.append(pa.Check.le(rule.max))
        if rule and rule.allowed is not None:
            checks.append(pa.Check.isin(rule.allowed))
        if 0 < max_null < 1 and not per_row:
            checks.append(null_ratio_check(max_null))
        numeric = name in config.features.numeric or (name == config.target and config.task != "multiclass")
        if numeric:
            checks.append(FINITE)  # inf passes pandas' NaN handling and most models silently
        if name == config.target:
            # an unlabelled row cannot train or evaluate anything, but can be scored
            max_null = 0.0 if require_target else 1.0
            if config.task == "binary":
                checks.append(pa.Check.isin([0, 1]))
        columns[name] = pa.Column(
            float if numeric else str,
            coerce=numeric,  # ints and numeric strings are fine; "abc" in a number column is not
            nullable=max_null > 0,
            checks=checks,
            required=require_target or name != config.target,
        )
    columns[config.timestamp] = pa.Column("datetime64[ns, UTC]", coerce=True, nullable=False)
    if not require_target:
        for key in config.validation.unique_key:
            columns.setdefault(key, pa.Column(None, nullable=False))  # any dtype; present and non-null
    return pa.DataFrameSchema(columns, strict=False, name=config.name)


def schema_failures(error: SchemaErrors, frame: pd.DataFrame, file: str) -> list[Failure]:
    """One Failure per (column, rule), with how many rows broke it and a few offending values."""
    cases = error.failure_cases
    uncoerced = set(cases.loc[cases["check"].astype(str).str.startswith("coerce_"), "column"].dropna())
    failures = []
    for (column, check), group in cases.groupby(["column", "check"], dropna=False, sort=False):
        check = str(check)
        if check == "column_in_dataframe":
            missing = [str(v) for v in group["failure_case"]]
            failures += [Failure(file, m, "column is missing", None) for m in missing]
            continue
        column = None if pd.isna(column) else str(column)
        if check.startswith("dtype(") and (cases["check"] == f"coerce_{check}").any():
            continue  # the coerce failure already names the same rows
        rows = group["index"].dropna()
        if rows.empty and column in uncoerced and not check.startswith("coerce_"):
            continue  # the check crashed on the values the coerce failure already names (a TypeError)
        if rows.empty and column is not None and check.startswith("max_null_ratio"):
            count: int | None = int(frame[column].isna().sum())
            examples: list[Any] = [f"null ratio {frame[column].isna().mean():.3f}"]
        else:
            count = int(rows.nunique()) if not rows.empty else None
            examples = [_plain(v) for v in group["failure_case"].drop_duplicates().head(MAX_EXAMPLES)]
        failures.append(Failure(file, column, check, count, examples))
    return failures


def _plain(value: Any) -> Any:
    """JSON-friendly example value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, int | float | str | bool):
        return value
    return str(value)


@functools.cache
def _gx_batch_definition() -> Any:
    """One ephemeral GX context per process: no files, no analytics, no progress bars."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("driftloop")
    asset = source.add_dataframe_asset(name="batch")
    return asset.add_batch_definition_whole_dataframe("whole-batch")


def build_suite(config: TrainingConfig, columns: set[str]) -> Any:
    """Dataset-level expectations; those about absent columns are left to the schema's report."""
    import great_expectations as gx

    rules = config.validation
    suite = gx.ExpectationSuite(name=f"{config.name}-batch")
    suite.add_expectation(
        gx.expectations.ExpectTableRowCountToBeBetween(min_value=rules.min_rows, max_value=rules.max_rows)
    )
    if len(rules.unique_key) == 1 and rules.unique_key[0] in columns:  # GX's compound form needs two or more
        suite.add_expectation(gx.expectations.ExpectColumnValuesToBeUnique(column=rules.unique_key[0]))
    elif rules.unique_key and set(rules.unique_key) <= columns:
        suite.add_expectation(gx.expectations.ExpectCompoundColumnsToBeUnique(column_list=rules.unique_key))
    for column, (low, high) in rules.mean_bounds.items():
        if column in columns:
            suite.add_expectation(
                gx.expectations.ExpectColumnMeanToBeBetween(column=column, min_value=low, max_value=high)
            )
    return suite


def expectation_failures(config: TrainingConfig, frame: pd.DataFrame, file: str) -> list[Failure]:
    batch = _gx_batch_definition().get_batch(batch_parameters={"dataframe": frame})  # context first
    suite = build_suite(config, set(frame.columns))
    failures = []
    for result in batch.validate(suite).results:
        if result.success:
            continue
        kwargs = result.expectation_config.kwargs
        column = kwargs.get("column") or (",".join(kwargs["column_list"]) if "column_list" in kwargs else None)
        bounds = {k: kwargs[k] for k in ("min_value", "max_value") if k in kwargs}
        observed = result.result.get("observed_value")
        examples = [f"observed {_plain(observed)}, expected {bounds}"] if observed is not None else []
        failures.append(
            Failure(file, column, result.expectation_config.type, result.result.get("unexpected_count"), examples)
        )
    return failures


def check_frame(
    config: TrainingConfig, frame: pd.DataFrame, file: str, *, require_target: bool = True
) -> tuple[pd.DataFrame, list[Failure]]:
    """Derive, then run the schema and the suite; returns the coerced frame and every failure (empty if valid).

    With `require_target=False` (a batch to score) a target column holding no label at all is
    treated as absent, so its dataset-level expectations (mean bounds) are not applied to it.
    """
    try:
        frame = derive_columns(config, frame)
    except DeriveError as error:
        return frame, [Failure(file, error.column, f"derive {error.rule}: {error.problem}", None)]
    schema = build_schema(config, require_target=require_target)
    try:
        validated = schema.validate(frame, lazy=True)
        failures: list[Failure] = []
    except SchemaErrors as error:
        validated = frame
        failures = schema_failures(error, frame, file)
    suite_frame = frame
    if not require_target and config.target in frame.columns and frame[config.target].isna().all():
        suite_frame = frame.drop(columns=[config.target])
    failures += expectation_failures(config, suite_frame, file)
    return validated, failures


def select_window(
    config: TrainingConfig, frame: pd.DataFrame, window: TimeWindow | None, *, require_target: bool = True
) -> pd.DataFrame:
    """Rows inside the window (all rows when it is None), with only the columns the model may see.

    With `require_target=False` (scoring) the row-key columns are kept too, for joining the
    delayed labels, and the target only if the frame has it: timestamp, keys, features, target.
    """
    inside = pd.Series(True, index=frame.index) if window is None else in_window(frame[config.timestamp], window)
    if require_target:
        keep = [config.timestamp, *config.features.all, config.target]
    else:
        target = [config.target] if config.target in frame.columns else []
        keep = list(dict.fromkeys([config.timestamp, *config.validation.unique_key, *config.features.all, *target]))
    return frame.loc[inside, keep].reset_index(drop=True)


def quarantine_reason(batch: LandedBatch, failures: list[Failure]) -> dict[str, Any]:
    return {
        "file": batch.name,
        "landed_path": batch.path,
        "sha256": batch.digest,
        "rejected_at": datetime.now(UTC).isoformat(),
        "failures": [asdict(f) for f in failures],
    }


@task(cache_policy=NO_CACHE)
def validate(
    config: TrainingConfig,
    batches: list[LandedBatch],
    window: TimeWindow | None,
    stores: Stores,
    require_target: bool = True,
) -> pd.DataFrame:
    """Validate every landed batch; quarantine the bad ones and stop, or return the window's rows.

    `require_target=False` validates a batch to score (see `build_schema` and `select_window`).
    """
    logger = get_run_logger()
    if not batches:
        raise ValueError(f"{config.name}: no batches to validate; the source landed nothing")
    store = DataStore(stores.data_uri)
    frames, failures, quarantined = [], [], []
    for batch in batches:
        try:
            frame, batch_failures = check_frame(
                config,
                parse_batch(batch.name, store.read_landed(batch.path, config.name)),
                batch.name,
                require_target=require_target,
            )
        except BatchReadError as error:
            batch_failures = [Failure(batch.name, None, f"readable: {error.problem}", None)]
        if batch_failures:
            quarantined.append(store.quarantine(batch.path, config.name, quarantine_reason(batch, batch_failures)))
            failures += batch_failures
            for failure in batch_failures:
                logger.error("validation failed: %s", failure.describe())
        else:
            frames.append(frame)
            store.settle(batch.path, config.name)  # it passed: it lives in processed/ from now on
            logger.info("%s: %d rows passed the schema and the suite", batch.name, len(frame))
    if failures:
        raise BatchRejected(failures, quarantined)
    selected = select_window(config, pd.concat(frames, ignore_index=True), window, require_target=require_target)
    if selected.empty:
        where = f"inside the window {window.label()}" if window else "at all"
        raise ValueError(f"no rows {where} in {[b.name for b in batches]}")
    return selected
