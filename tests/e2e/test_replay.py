"""The backtest end to end: `driftloop replay` on a real local server, the served deployments and the
drift-event trigger, shortened to a few periods of each shipped dataset at a small tuning budget."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tasks.stages import STAGES_FILE, read_stages
from tests.budget import with_small_budget

pytestmark = pytest.mark.e2e

DRIFTLOOP = str(Path(sys.executable).parent / "driftloop")


def short(repo_root: Path, tmp_path: Path, name: str) -> Path:
    config = with_small_budget(yaml.safe_load((repo_root / "configs" / f"{name}.yaml").read_text()))
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def replay(repo_root: Path, tmp_path: Path, name: str, periods: int) -> tuple[subprocess.CompletedProcess, Path]:
    home = tmp_path / "home"
    (home / "prefect").mkdir(parents=True)
    env = {**os.environ, "DRIFTLOOP_HOME": str(home), "PREFECT_HOME": str(home / "prefect")}
    run = subprocess.run(
        [DRIFTLOOP, "replay", "--config", str(short(repo_root, tmp_path, name)), "--periods", str(periods)],
        cwd=repo_root, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run, home / "replay" / name


def test_the_flights_replay_of_one_month_writes_the_tables_and_the_plot(tmp_path: Path, repo_root: Path) -> None:
    run, folder = replay(repo_root, tmp_path, "flights", periods=1)

    assert "| 2013-03-01..2013-04-01 | v1 |" in run.stdout
    summary = pd.read_csv(folder / "summary.csv")
    assert list(summary["period"]) == ["2013-03-01..2013-04-01"]
    assert summary.loc[0, "rows"] > 20_000
    assert 0.55 < summary.loc[0, "loop"] < 0.9
    assert summary.loc[0, "loop"] == pytest.approx(summary.loc[0, "static"])  # no retrain before March
    frontier = pd.read_csv(folder / "frontier.csv")
    assert list(frontier["retrains"]) == [0, 1]
    assert frontier.loc[0, "best_mean"] == pytest.approx(summary.loc[0, "static"])
    assert frontier.loc[1, "best_mean"] == pytest.approx(summary.loc[0, "always"])
    assert "Loop regret" in run.stdout
    assert "training CPU of the retrains" in run.stdout
    assert (folder / "quality.png").read_bytes()[:4] == b"\x89PNG"
    # where the wall time went, by stage, in the order the run took them
    watch, context = read_stages(folder / STAGES_FILE)
    kinds = [stage.kind for stage in watch.stages]
    assert kinds[:3] == ["server start and serving the deployments", "loading and validating the replay's data",
                         "initial training"]  # fmt: skip
    assert kinds.count("scoring") == 1
    assert kinds.count("monitoring") == 1
    assert kinds[-1] == "server stop"
    assert all(stage.seconds >= 0 for stage in watch.stages)
    assert sum(stage.seconds for stage in watch.stages) <= float(context["seconds"])
    assert watch.stages[2].seconds > 5  # a real training ran in it
    assert "| initial training | 1 |" in run.stdout


@pytest.mark.parametrize(("name", "metric"), [("bikeshare", "rmse"), ("seattle-weather", "f1_macro")])
def test_a_files_dataset_replays_through_the_same_loop(tmp_path: Path, repo_root: Path, name: str, metric: str) -> None:
    run, folder = replay(repo_root, tmp_path, name, periods=2)

    summary = pd.read_csv(folder / "summary.csv")
    assert len(summary) == 2
    assert (summary["rows"] > 0).all()
    assert summary[["loop", "static", "always"]].notna().all().all()
    assert (summary["champion_version"].astype(str) != "-").all()
    frontier = pd.read_csv(folder / "frontier.csv")
    assert list(frontier["retrains"]) == [0, 1, 2]
    assert frontier.loc[0, "best_mean"] == pytest.approx(summary["static"].mean())
    assert frontier.loc[2, "best_mean"] == pytest.approx(summary["always"].mean())
    assert f"mean {metric} (2 of 2 periods)" in run.stdout
    started = summary["retrain_started"].astype(bool)
    assert summary.loc[started, "retrain_cpu_seconds"].notna().all()  # every retrain says what it cost
    # every retrain was judged: a small holdout (61 daily rows) is a comparison, not "not comparable"
    assert not summary.loc[started, "why"].astype(str).str.contains("not comparable").any(), summary["why"]
    assert (folder / "quality.png").read_bytes()[:4] == b"\x89PNG"
