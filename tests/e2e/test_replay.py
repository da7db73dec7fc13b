"""`make run`'s job, shortened to one month: a real local server, the served deployments,
the initial training, one month scored, labelled and checked, and the summary written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.e2e


def test_replay_of_one_month_writes_the_table_and_the_plot(tmp_path: Path, repo_root: Path) -> None:
    config = yaml.safe_load((repo_root / "configs" / "flights.yaml").read_text())
    config["tuning"].update({"n_trials": 3, "timeout_seconds": 120})
    config_path = tmp_path / "flights.yaml"
    config_path.write_text(yaml.safe_dump(config))
    home = tmp_path / "home"
    env = {**os.environ, "DRIFTLOOP_HOME": str(home), "PREFECT_HOME": str(home / "prefect")}
    (home / "prefect").mkdir(parents=True)

    run = subprocess.run(
        [sys.executable, "-m", "flows.replay", "--config", str(config_path), "--last-month", "3"],
        cwd=repo_root, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip

    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "| 2013-03-01..2013-04-01 | v1 |" in run.stdout
    summary = pd.read_csv(home / "replay" / "summary.csv")
    assert list(summary["period"]) == ["2013-03-01..2013-04-01"]
    assert summary.loc[0, "rows"] > 20_000
    assert 0.55 < summary.loc[0, "loop"] < 0.9
    assert summary.loc[0, "loop"] == pytest.approx(summary.loc[0, "static"])  # no retrain before March
    assert (home / "replay" / "quality.png").read_bytes()[:4] == b"\x89PNG"
