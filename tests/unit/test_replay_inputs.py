"""Bad replays fail at once, before any server starts, with what is wrong and where."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from flows.replay import run
from tasks.backtest import ReplayPlan
from tasks.replay import load_replay_data
from tasks.settings import load_config


def write(tmp_path: Path, raw: dict) -> Path:  # type: ignore[type-arg]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def files_dataset(tmp_path: Path, make_config, frame: pd.DataFrame, **replay: object):  # type: ignore[no-untyped-def]
    data = tmp_path / "history.csv"
    frame.to_csv(data, index=False)
    return make_config(
        "binary",
        source={"kind": "files", "path": str(data)},
        validation={"min_rows": 1, "unique_key": ["ts"], "columns": {"x2": {"max_null_ratio": 0.5}}},
        window={"start": "2024-01-01", "end": "2024-01-08"},
        replay={"start": "2024-01-08", "end": "2024-01-29", "period": "week", **replay},
    )


def test_a_replay_window_outside_the_data_is_refused_before_any_server_starts(
    tmp_path: Path, repo_root: Path, capsys, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("DRIFTLOOP_HOME", str(tmp_path / "home"))
    raw = yaml.safe_load((repo_root / "configs" / "flights.yaml").read_text())
    raw["replay"].update({"start": "2015-01-01", "end": "2015-03-01"})

    assert run(str(write(tmp_path, raw)), periods=None) == 1

    error = capsys.readouterr().err
    assert "replay stopped: flights: no row of the source lies in the replay 2015-01-01..2015-03-01" in error
    assert "(the data spans 2013-01-01" in error
    assert not (tmp_path / "home" / "run").exists()  # no server was started for nothing


def test_a_config_without_a_replay_section_or_a_zero_period_count_is_bad_input(
    tmp_path: Path, repo_root: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    raw = yaml.safe_load((repo_root / "configs" / "flights.yaml").read_text())
    assert run(str(write(tmp_path, raw)), periods=0) == 2
    assert "--periods 0: replay at least one period" in capsys.readouterr().err
    del raw["replay"]
    assert run(str(write(tmp_path, raw)), periods=None) == 2
    assert "no replay: section" in capsys.readouterr().err


def test_a_dataset_whose_labels_never_arrive_is_refused(tmp_path: Path, make_config, make_frame) -> None:  # type: ignore[no-untyped-def]
    frame = make_frame("binary", rows=280, days=28).assign(y=np.nan)
    config = files_dataset(tmp_path, make_config, frame)

    with pytest.raises(ValueError, match=r"no row under the replay has a label \('y' is always null\)"):
        load_replay_data(config, ReplayPlan.from_config(config.replay))


def test_a_period_with_no_rows_is_counted_as_empty_not_skipped(tmp_path: Path, make_config, make_frame) -> None:  # type: ignore[no-untyped-def]
    frame = make_frame("binary", rows=280, days=28)
    frame = frame[~frame["ts"].between(pd.Timestamp("2024-01-15", tz="UTC"), pd.Timestamp("2024-01-22", tz="UTC"))]
    config = files_dataset(tmp_path, make_config, frame)

    data = load_replay_data(config, ReplayPlan.from_config(config.replay))

    assert data.period_rows[0] > 0
    assert data.period_rows[1] == 0
    assert data.period_rows[2] > 0


def test_a_source_package_that_is_not_installed_is_named(tmp_path: Path, make_config) -> None:  # type: ignore[no-untyped-def]
    config = make_config(
        "binary",
        source={"kind": "files", "path": "data/x.csv", "package": "no_such_package_here"},
        replay={"start": "2024-02-01", "end": "2024-03-01"},
    )

    with pytest.raises(ValueError, match=r"no_such_package_here:data/x\.csv: the no_such_package_here package is not"):
        load_replay_data(config, ReplayPlan.from_config(config.replay))


def test_shipped_configs_replay_files_through_the_package_paths(repo_root: Path) -> None:
    config = load_config(repo_root / "configs" / "bikeshare.yaml")
    data = load_replay_data(config, ReplayPlan.from_config(config.replay, limit=2))

    assert len(data.period_rows) == 2
    assert all(n > 600 for n in data.period_rows)  # about 720 hours a month


def test_source_rows_that_break_the_contract_are_named(tmp_path: Path, make_config, make_frame) -> None:  # type: ignore[no-untyped-def]
    config = files_dataset(tmp_path, make_config, make_frame("binary", rows=280, days=28).assign(x1="not a number"))

    with pytest.raises(ValueError, match="break the data contract: synthetic source: column 'x1'"):
        load_replay_data(config, ReplayPlan.from_config(config.replay))
