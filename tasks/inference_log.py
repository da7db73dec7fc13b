"""The inference log: append-only record of what the champion predicted, and the labels that came later.

Layout under the data root (hive-style partitions, one Parquet file per batch):

    inference/<dataset>/batch_id=<batch_id>/part-0.parquet   what was scored, by which version
    labels/<dataset>/batch_id=<batch_id>/part-0.parquet      row key + target + recorded_at

Writing a batch id again replaces its partition atomically, so re-scoring (or re-labelling) a
batch never duplicates rows. Every append is checked against `log_schema` before anything is
written. `read()` joins the delayed labels on `validation.unique_key`; rows without a label yet
carry a null target. As hive partitioning has it, `batch_id` lives in the folder name, not in the
file, so any hive-aware reader (`pd.read_parquet(<root>/inference/<dataset>)`, DuckDB) sees the
same columns; `InferenceLog.read()` adds it back from the path.
"""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow
import pyarrow.parquet as pq

from tasks.settings import TrainingConfig
from tasks.stores import DataStore

PREDICTION = "prediction"
CONFIDENCE = "prediction_confidence"
PROBABILITIES = "prediction_probabilities"  # multiclass: {"class": P(class), ...} as JSON text per row
BATCH_ID = "batch_id"
SCORED_AT = "scored_at"
MODEL_NAME = "model_name"
MODEL_VERSION = "model_version"
RECORDED_AT = "recorded_at"
REQUEST_ID = "request_id"  # online rows only (flows/serve.py): the request that asked for the prediction
PART = "part-0.parquet"
UTC_NS = "datetime64[ns, UTC]"

# A batch id names a folder: letters, digits and . _ : + - only, starting with a letter or digit.
BATCH_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:+-]*$"
_BATCH_ID = re.compile(BATCH_ID_PATTERN)


def _nonempty(name: str) -> pa.Check:
    return pa.Check.str_length(min_value=1, name=f"{name}_not_empty")


def key_columns(config: TrainingConfig) -> list[str]:
    """The row key, in config order; empty if the config declares none."""
    return list(config.validation.unique_key)


def record_columns(config: TrainingConfig) -> list[str]:
    """Data columns of a log row, deduplicated in order: timestamp, row key, features."""
    return list(dict.fromkeys([config.timestamp, *key_columns(config), *config.features.all]))


def prediction_columns(config: TrainingConfig) -> list[str]:
    return [PREDICTION, CONFIDENCE, PROBABILITIES] if config.task == "multiclass" else [PREDICTION]


def log_columns(config: TrainingConfig) -> list[str]:
    """Every column of a stored log row, in the order it is written."""
    return [
        BATCH_ID, SCORED_AT, MODEL_NAME, MODEL_VERSION, *record_columns(config), *prediction_columns(config), REQUEST_ID
    ]  # fmt: skip


def log_schema(config: TrainingConfig) -> pa.DataFrameSchema:
    """The contract of one appended batch of the inference log.

    The row data was validated before scoring, so features are checked for their dtype only
    (numbers coerced to float, categories str, nulls allowed). Row-key columns that are neither
    the timestamp nor a feature keep whatever dtype the batch has, but must be non-null.
    Predictions: P(positive) in [0, 1] for binary, a finite number for regression, a class label
    plus its probability in [0, 1] for multiclass, and every class's probability as a JSON object
    (missing in rows logged by a writer that did not have them).
    """
    finite = pa.Check(lambda s: ~np.isinf(s), ignore_na=True, name="finite")
    unit = [pa.Check.in_range(0.0, 1.0), finite]
    columns: dict[str, pa.Column] = {
        BATCH_ID: pa.Column(str, nullable=False, checks=pa.Check.str_matches(BATCH_ID_PATTERN)),
        SCORED_AT: pa.Column(UTC_NS, coerce=True, nullable=False),
        MODEL_NAME: pa.Column(str, nullable=False, checks=_nonempty(MODEL_NAME)),
        MODEL_VERSION: pa.Column(str, nullable=False, checks=_nonempty(MODEL_VERSION)),
        config.timestamp: pa.Column(UTC_NS, coerce=True, nullable=False),
    }
    for key in key_columns(config):
        columns.setdefault(key, pa.Column(None, nullable=False))
    for name in config.features.all:
        numeric = name in config.features.numeric
        nullable_key = name not in config.validation.unique_key
        columns[name] = pa.Column(float if numeric else str, coerce=numeric, nullable=nullable_key)
    if config.task == "binary":
        columns[PREDICTION] = pa.Column(float, coerce=True, nullable=False, checks=unit)
    elif config.task == "regression":
        columns[PREDICTION] = pa.Column(float, coerce=True, nullable=False, checks=finite)
    else:
        columns[PREDICTION] = pa.Column(str, nullable=False, checks=_nonempty(PREDICTION))
        columns[CONFIDENCE] = pa.Column(float, coerce=True, nullable=False, checks=unit)
        columns[PROBABILITIES] = pa.Column(str, nullable=True, checks=pa.Check.str_startswith("{"))
    columns[REQUEST_ID] = pa.Column(str, nullable=True, checks=_nonempty(REQUEST_ID))  # null: batch scoring
    return pa.DataFrameSchema(columns, strict=True, name=f"{config.name}-inference-log")


def _target_dtype(config: TrainingConfig) -> str:
    return "object" if config.task == "multiclass" else "float64"


def _as_utc_ns(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values, utc=True).astype(UTC_NS)


def _align_key_dtypes(log: pd.DataFrame, labels: pd.DataFrame, key: list[str]) -> pd.DataFrame:
    """Cast the labels' key columns to the log's dtypes, so equal keys compare equal after Parquet."""
    labels = labels.copy()
    for column in key:
        want, have = log[column].dtype, labels[column].dtype
        if want == have:
            continue
        if isinstance(want, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(want):
            converted = pd.to_datetime(labels[column], utc=isinstance(want, pd.DatetimeTZDtype))
            labels[column] = converted.astype(want)
        elif pd.api.types.is_numeric_dtype(want) and pd.api.types.is_numeric_dtype(have):
            continue  # pandas joins int64 to float64 by value
        else:
            labels[column] = labels[column].astype(want)
    return labels


def join_labels(log: pd.DataFrame, labels: pd.DataFrame, key: list[str], target: str) -> pd.DataFrame:
    """The log with its label joined on `key`: a left join that never adds or drops a log row.

    Pure. Rows with no label get a null target. Label rows with a null key are ignored (they
    identify nothing). When a key is labelled more than once the LAST label row wins (so a
    correction appended after the original, or recorded under a later batch id, takes effect).
    A `target` column already in `log` is replaced. The result keeps the log's index and order.
    """
    if not key:
        raise ValueError(f"joining labels on {target!r} needs validation.unique_key to join labels on; none is set")
    missing = [c for c in key if c not in log.columns]
    if missing:
        raise ValueError(f"the log lacks row-key columns {missing}")
    missing = [c for c in [*key, target] if c not in labels.columns]
    if missing:
        raise ValueError(f"the labels lack columns {missing}")
    labels = labels.loc[labels[key].notna().all(axis=1), [*key, target]]
    labels = labels.drop_duplicates(subset=key, keep="last")
    labels = _align_key_dtypes(log, labels, key)
    left = log.drop(columns=[target]) if target in log.columns else log
    joined = left.merge(labels, on=key, how="left", validate="many_to_one", sort=False)
    assert len(joined) == len(log), "a left join on deduplicated labels cannot change the row count"
    joined.index = log.index
    return joined


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def _partition(batch_id: str) -> str:
    if not isinstance(batch_id, str) or not _BATCH_ID.match(batch_id):
        raise ValueError(f"batch id {batch_id!r} is not a valid folder name (pattern {BATCH_ID_PATTERN})")
    return f"{BATCH_ID}={batch_id}/{PART}"


def _utc(moment: datetime | pd.Timestamp) -> pd.Timestamp:
    """A timezone-aware UTC timestamp; a naive one is taken to be UTC already."""
    stamp = pd.Timestamp(moment)
    return stamp.tz_localize(UTC) if stamp.tzinfo is None else stamp.tz_convert(UTC)


class InferenceLog:
    """The inference log and delayed labels of one dataset, in a DataStore."""

    def __init__(self, store: DataStore, config: TrainingConfig) -> None:
        self.store = store
        self.config = config

    # --- writing --------------------------------------------------------------------------

    def append(
        self,
        frame: pd.DataFrame,
        predictions: pd.Series | np.ndarray,
        batch_id: str,
        model_name: str,
        model_version: str,
        scored_at: datetime | pd.Timestamp | pd.Series,
        confidence: pd.Series | np.ndarray | None = None,
        probabilities: pd.Series | None = None,
        request_ids: pd.Series | None = None,
    ) -> str:
        """Write the scored batch as its own partition, replacing any earlier write of `batch_id`.

        `scored_at` is one moment for the whole batch, or one per row (online rows, answered at
        different times); `request_ids`, online rows only, names each row's request.
        `predictions` (and, for multiclass, `confidence`) line up with `frame` by position. The
        target, if `frame` has it, is not logged: labels go through `record_labels`. Raises
        pandera's SchemaErrors (every problem at once) before writing anything if the batch
        breaks `log_schema`. Returns the path written.
        """
        config = self.config
        if frame.empty:
            raise ValueError(f"{config.name}: batch {batch_id!r} has no rows to log")
        if len(predictions) != len(frame):
            raise ValueError(f"{len(predictions)} predictions for {len(frame)} rows")
        if config.task == "multiclass":
            if confidence is None:
                raise ValueError("a multiclass log needs the prediction confidence")
            if len(confidence) != len(frame):
                raise ValueError(f"{len(confidence)} confidences for {len(frame)} rows")
            if probabilities is not None and len(probabilities) != len(frame):
                raise ValueError(f"{len(probabilities)} class probabilities for {len(frame)} rows")
        elif confidence is not None or probabilities is not None:
            raise ValueError(f"confidence and class probabilities are only logged for multiclass, not {config.task}")
        missing = [c for c in record_columns(config) if c not in frame.columns]
        if missing:
            raise ValueError(f"{config.name}: the scored frame lacks columns {missing}")

        rows = len(frame)
        record = frame[record_columns(config)].reset_index(drop=True)
        if isinstance(scored_at, pd.Series):
            if len(scored_at) != rows:
                raise ValueError(f"{len(scored_at)} scoring times for {rows} rows")
            moments = pd.to_datetime(scored_at.reset_index(drop=True), utc=True)
        else:
            moments = pd.Series([_utc(scored_at)] * rows)
        meta = pd.DataFrame(
            {
                BATCH_ID: [batch_id] * rows,
                SCORED_AT: moments,
                MODEL_NAME: [model_name] * rows,
                MODEL_VERSION: [model_version] * rows,
            }
        )
        scored: dict[str, Any] = {PREDICTION: np.asarray(predictions)}
        if confidence is not None:
            scored[CONFIDENCE] = np.asarray(confidence)
            scored[PROBABILITIES] = (
                np.asarray(probabilities, dtype=object)
                if probabilities is not None
                else np.full(rows, None, dtype=object)
            )
        if request_ids is not None and len(request_ids) != rows:
            raise ValueError(f"{len(request_ids)} request ids for {rows} rows")
        scored[REQUEST_ID] = (
            np.full(rows, None, dtype=object) if request_ids is None else np.asarray(request_ids, dtype=object)
        )
        entry = pd.concat([meta, record, pd.DataFrame(scored)], axis=1)[log_columns(config)]
        entry = log_schema(config).validate(entry, lazy=True)
        # the partition folder names the batch (hive style); the file holds the rest
        return self.store.put(
            "inference", config.name, _partition(batch_id), _parquet_bytes(entry.drop(columns=BATCH_ID))
        )

    def merge(self, batch_ids: list[str], into: str) -> str:
        """Rewrite several partitions as one (`into`), then delete them; returns the merged path.

        Many small online writes make every later read open many files; merging keeps the log's file
        count to a few per hour. The merged partition is written before any source is deleted, so a
        crash in between leaves rows twice in storage, never lost; `read()` counts a row key once.
        """
        paths = [self.store.path("inference", self.config.name, _partition(b)) for b in batch_ids]
        tables = []
        for path in paths:
            with self.store.open(path) as handle:
                tables.append(pq.read_table(handle))
        merged = pyarrow.concat_tables(tables, promote_options="default")
        buffer = io.BytesIO()
        pq.write_table(merged, buffer)
        target = self.store.put("inference", self.config.name, _partition(into), buffer.getvalue())
        for path in paths:
            if path != target:
                self.store.remove(path)
        return target

    def record_labels(
        self, labels: pd.DataFrame, batch_id: str, recorded_at: datetime | pd.Timestamp | None = None
    ) -> str:
        """Store delayed labels (row key + target) for `batch_id`, replacing earlier ones of it.

        The labels' batch id is independent of the scored batch ids: a label joins whatever
        log row has its key. Each write is stamped `recorded_at` (default now), so when a key is
        labelled again the most recently recorded label wins. Raises ValueError naming any
        missing column; pandera's SchemaErrors if a key or a target is null or a binary target
        is not 0/1. Nothing is written unless the labels pass.
        """
        config = self.config
        key = key_columns(config)
        if not key:
            raise ValueError(f"{config.name}: recording labels needs validation.unique_key to join labels on")
        missing = [c for c in [*key, config.target] if c not in labels.columns]
        if missing:
            raise ValueError(f"{config.name}: labels lack columns {missing} (need row key {key} and {config.target!r})")
        path = _partition(batch_id)
        frame = labels[[*key, config.target]].reset_index(drop=True)
        frame = self._label_schema().validate(frame, lazy=True)
        frame[RECORDED_AT] = pd.Series(_utc(recorded_at or datetime.now(UTC)), index=frame.index).astype(UTC_NS)
        return self.store.put("labels", config.name, path, _parquet_bytes(frame))

    def _label_schema(self) -> pa.DataFrameSchema:
        config = self.config
        columns = {
            key: pa.Column(UTC_NS, coerce=True, nullable=False)
            if key == config.timestamp
            else pa.Column(None, nullable=False)
            for key in key_columns(config)
        }
        if config.task == "multiclass":
            columns[config.target] = pa.Column(str, nullable=False)
        else:
            checks = [pa.Check.isin([0, 1])] if config.task == "binary" else []
            columns[config.target] = pa.Column(float, coerce=True, nullable=False, checks=checks)
        return pa.DataFrameSchema(columns, name=f"{config.name}-labels")

    # --- reading --------------------------------------------------------------------------

    def batches(self) -> list[str]:
        """The batch ids in the log, sorted."""
        return sorted({self._batch_of(path) for path in self.store.find("inference", self.config.name, PART)})

    @staticmethod
    def _batch_of(path: str) -> str:
        folder = path.rsplit("/", 2)[-2]
        return folder.removeprefix(f"{BATCH_ID}=")

    def _read_area(
        self, area: str, start: pd.Timestamp | None = None, end: pd.Timestamp | None = None
    ) -> list[pd.DataFrame]:
        """The partitions of an area in batch-id order, each with its batch id as a column.

        With bounds, a partition whose Parquet statistics put every timestamp outside [start, end)
        is skipped after reading only its footer: a check of one window does not read all history.
        """
        parts = []
        for path in self.store.find(area, self.config.name, PART):
            with self.store.open(path) as handle:
                parquet = pq.ParquetFile(handle)
                if not may_hold(parquet, self.config.timestamp, start, end):
                    continue
                frame = parquet.read().to_pandas()
            frame.insert(0, BATCH_ID, self._batch_of(path))
            parts.append(frame)
        return parts

    def empty(self) -> pd.DataFrame:
        """A log with no rows and every column `read()` returns, typed."""
        config = self.config
        dtypes: dict[str, Any] = {BATCH_ID: "object", SCORED_AT: UTC_NS, MODEL_NAME: "object", MODEL_VERSION: "object"}
        for name in record_columns(config):
            dtypes[name] = "float64" if name in config.features.numeric else "object"
        dtypes[config.timestamp] = UTC_NS
        dtypes[PREDICTION] = "object" if config.task == "multiclass" else "float64"
        if config.task == "multiclass":
            dtypes[CONFIDENCE] = "float64"
            dtypes[PROBABILITIES] = "object"
        dtypes[REQUEST_ID] = "object"
        dtypes[config.target] = _target_dtype(config)
        return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in dtypes.items()})

    def labels(self) -> pd.DataFrame:
        """Every recorded label (key, target, recorded_at, batch_id), oldest recording first.

        That order is what `join_labels` needs for "the most recently recorded label wins".
        """
        config = self.config
        parts = self._read_area("labels")
        if not parts:
            return pd.DataFrame(columns=[BATCH_ID, *key_columns(config), config.target, RECORDED_AT])
        frame = pd.concat(parts, ignore_index=True)
        for column in {config.timestamp, RECORDED_AT} & set(frame.columns):
            frame[column] = _as_utc_ns(frame[column])
        return frame.sort_values(RECORDED_AT, kind="stable").reset_index(drop=True)

    def read(self, start: pd.Timestamp | None = None, end: pd.Timestamp | None = None) -> pd.DataFrame:
        """Logged rows with the timestamp in [start, end), sorted by it, delayed labels joined.

        Naive bounds are taken as UTC. The target column is null where no label arrived (yet);
        an empty log (or window) gives an empty frame with every column. A row scored more than
        once (overlapping windows, or the same rows under two batch ids) counts once: its latest
        scoring, found by the row key, so drift and performance never count a row twice.
        """
        config = self.config
        parts = self._read_area("inference", start, end)
        if not parts:
            return self.empty()
        log = pd.concat(parts, ignore_index=True)
        if REQUEST_ID not in log.columns:  # written before online serving logged request ids
            log[REQUEST_ID] = pd.Series(None, index=log.index, dtype="object")
        for column in (SCORED_AT, config.timestamp):
            log[column] = _as_utc_ns(log[column])
        stamp = log[config.timestamp]
        inside = pd.Series(True, index=log.index)
        if start is not None:
            inside &= stamp >= _utc(start)
        if end is not None:
            inside &= stamp < _utc(end)
        log = log.loc[inside]
        if key := key_columns(config):
            log = log.sort_values(SCORED_AT, kind="stable").drop_duplicates(subset=key, keep="last")
        log = log.sort_values(config.timestamp, kind="stable").reset_index(drop=True)
        if log.empty:
            return self.empty()
        labels = self.labels()
        if labels.empty:
            log[config.target] = pd.Series(np.nan, index=log.index, dtype=_target_dtype(config))
        else:
            log = join_labels(log, labels, key_columns(config), config.target)
            log[config.target] = log[config.target].astype(_target_dtype(config))
        return log


def may_hold(parquet: pq.ParquetFile, column: str, start: pd.Timestamp | None, end: pd.Timestamp | None) -> bool:
    """Whether a Parquet file may hold a `column` value in [start, end), by its row groups' statistics.

    True whenever it cannot tell (no bounds, no such column, no statistics, statistics that are not
    timestamps): skipping is only an optimisation, never a filter.
    """
    if start is None and end is None:
        return True
    index = parquet.schema_arrow.get_field_index(column)
    if index < 0:
        return True
    for group in range(parquet.metadata.num_row_groups):
        stats = parquet.metadata.row_group(group).column(index).statistics
        if stats is None or not stats.has_min_max or not isinstance(stats.min, datetime):
            return True
        low, high = _utc(pd.Timestamp(stats.min)), _utc(pd.Timestamp(stats.max))
        if (start is None or high >= _utc(start)) and (end is None or low < _utc(end)):
            return True
    return False
