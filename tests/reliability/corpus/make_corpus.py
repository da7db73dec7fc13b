"""Write the bad-input corpus: one real week of 2013 NYC flights, damaged one way per file.

Run once from the repository root (`.venv/bin/python -m tests.reliability.corpus.make_corpus`);
the files it writes are committed and the tests read those, never this script. It is
deterministic: no random draws, so running it again rewrites the same bytes (Parquet included:
pyarrow writes no timestamps into the file). README.md beside it says what each file is and the
error it must produce.

The base sample is every 20th flight of 2013-01-01..2013-01-07 (296 rows, spread over the whole
week); the reliability test config lowers `validation.min_rows` to 50, so the base passes and
only the one planted defect fails.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.ingest import frame_to_parquet_bytes, load_bundled
from tasks.settings import TimeWindow, load_config

CORPUS = Path(__file__).resolve().parent
WEEK = TimeWindow(start="2013-01-01", end="2013-01-08")
EVERY = 20


def base_sample() -> pd.DataFrame:
    flights = load_config(CORPUS.parents[2] / "configs" / "flights.yaml")
    return load_bundled(flights, WEEK).iloc[::EVERY].reset_index(drop=True)


def csv_bytes(frame: pd.DataFrame, **options: object) -> bytes:
    return frame.to_csv(index=False, lineterminator="\n", **options).encode("utf-8")


def truncated_csv(frame: pd.DataFrame) -> bytes:
    """Every string quoted, then cut inside the last row's quoted `dest`: the quote never closes."""
    data = csv_bytes(frame, quoting=csv.QUOTE_NONNUMERIC)
    last_row = data.rstrip(b"\n").rindex(b"\n") + 1
    dest = f'"{frame["dest"].iloc[-1]}"'.encode()
    return data[: data.index(dest, last_row) + 2]  # the opening quote and one letter


def truncated_row(frame: pd.DataFrame) -> bytes:
    """No quotes, cut inside the last row's `pressure` (1029.3 becomes 10): pandas reads the short
    row without complaint, padding it with nulls; only the contract can tell."""
    data = csv_bytes(frame)
    last_row = data.rstrip(b"\n").rindex(b"\n") + 1
    pressure = f",{frame['pressure'].iloc[-1]},".encode()
    return data[: data.index(pressure, last_row) + 3]  # the comma and two digits


def truncated_parquet(frame: pd.DataFrame) -> bytes:
    """The first half of the file: a transfer that stopped; the footer (and its magic bytes) is gone."""
    data = frame_to_parquet_bytes(frame)
    return data[: len(data) // 2]


def latin1_csv(frame: pd.DataFrame) -> bytes:
    """A CSV re-saved as Latin-1 by a tool that 'fixed' one destination: one byte that is not UTF-8."""
    frame = frame.copy()
    frame.loc[frame.index[100], "dest"] = "Zürich"
    return frame.to_csv(index=False, lineterminator="\n").encode("latin-1")


def dtype_change(frame: pd.DataFrame) -> pd.DataFrame:
    """Temperatures exported with their unit: '39.0F' is text, not a number."""
    frame = frame.copy()
    frame["temp"] = frame["temp"].map(lambda v: "" if pd.isna(v) else f"{v:.1f}F")
    return frame


def duplicate_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Ten flights delivered twice (a retried upload appended to the same file)."""
    return pd.concat([frame, frame.iloc[::30]], ignore_index=True)


def out_of_range(frame: pd.DataFrame) -> pd.DataFrame:
    """Five midnight departures written as hour 24 instead of 0."""
    frame = frame.copy()
    frame.loc[frame.index[:5], "hour"] = 24
    return frame


def nan_flood(frame: pd.DataFrame) -> pd.DataFrame:
    """The weather feed lost four temperatures in five."""
    frame = frame.copy()
    frame.loc[frame.index % 5 != 0, "temp"] = np.nan
    return frame


def inf_flood(frame: pd.DataFrame) -> pd.DataFrame:
    """Every other wind speed is +inf (a division by a zero time interval upstream)."""
    frame = frame.copy()
    frame.loc[frame.index[::2], "wind_speed"] = np.inf
    return frame


def all_null_column(frame: pd.DataFrame) -> pd.DataFrame:
    """The destination column arrives empty: present, every value null."""
    frame = frame.copy()
    frame["dest"] = None
    return frame


def one_row(frame: pd.DataFrame) -> pd.DataFrame:
    """A single complete flight (no missing weather): only the batch size is wrong with it..."""
    return frame[frame.notna().all(axis=1)].head(1)


def with_extra_column(frame: pd.DataFrame) -> pd.DataFrame:
    """A new column the producer started sending; the contract ignores columns it does not know."""
    return frame.assign(booking_channel=np.where(frame.index % 3 == 0, "app", "web"))


WRITERS: dict[str, Callable[[pd.DataFrame], bytes]] = {
    "empty.csv": lambda frame: b"",
    "truncated.csv": truncated_csv,
    "truncated_row.csv": truncated_row,
    "truncated.parquet": truncated_parquet,
    "utf16.csv": lambda frame: frame.to_csv(index=False, lineterminator="\n").encode("utf-16"),
    "latin1.csv": latin1_csv,
    "extra_column.csv": lambda frame: csv_bytes(with_extra_column(frame)),
    "missing_column.parquet": lambda frame: frame_to_parquet_bytes(frame.drop(columns=["pressure"])),
    "renamed_column.csv": lambda frame: csv_bytes(frame.rename(columns={"dest": "destination"})),
    "dtype_change.csv": lambda frame: csv_bytes(dtype_change(frame)),
    "duplicate_rows.parquet": lambda frame: frame_to_parquet_bytes(duplicate_rows(frame)),
    "out_of_range.csv": lambda frame: csv_bytes(out_of_range(frame)),
    "nan_flood.parquet": lambda frame: frame_to_parquet_bytes(nan_flood(frame)),
    "inf_flood.parquet": lambda frame: frame_to_parquet_bytes(inf_flood(frame)),
    "all_null_column.parquet": lambda frame: frame_to_parquet_bytes(all_null_column(frame)),
    "one_row.csv": lambda frame: csv_bytes(one_row(frame)),
}


def main() -> None:
    frame = base_sample()
    for name, write in WRITERS.items():
        (CORPUS / name).write_bytes(write(frame))
    # every file must differ from the others, or landing would merge two cases into one batch
    assert len({(CORPUS / name).read_bytes() for name in WRITERS}) == len(WRITERS)
    for name in WRITERS:
        print(f"{name}: {(CORPUS / name).stat().st_size} bytes")


if __name__ == "__main__":
    main()
