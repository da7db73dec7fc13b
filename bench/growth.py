"""Growth: the training flow's wall time and peak memory as its window grows.

Windows start at the config's training window and end where the source first holds 50k, 100k and
300k rows, and at the end of the replay range (all of it); the row counts are the source's own,
read once. Each window is one run of `python -m flows.training --start --end` as its own process
against one running Prefect server, with a fresh home (so it trains and registers), and the tuning
budget cut to a few trials so the curve shows the per-row cost rather than the trial budget.
Peak memory is the flow process's own resident peak (the server's is not counted).
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import yaml

from bench.timing import Measured, timed_peak
from flows.local_stack import prefect_server
from tasks.ingest import in_window, read_source
from tasks.settings import TimeWindow, load_config

TARGET_ROWS = [50_000, 100_000, 300_000]
TRIALS = 2


@dataclass(frozen=True)
class Point:
    window: TimeWindow
    rows: int
    run: Measured


def windows(config_path: Path) -> list[tuple[TimeWindow, int]]:
    """(window, rows) from the training window's start to each target size, then the whole range."""
    config = load_config(config_path)
    start = config.window.start
    end = config.replay.end if config.replay is not None else config.window.end
    stamps = read_source(config, TimeWindow(start=start, end=end))[config.timestamp]
    stamps = stamps[in_window(stamps, TimeWindow(start=start, end=end))]
    days = stamps.dt.tz_convert("UTC").dt.date.value_counts().sort_index().cumsum()
    out: list[tuple[TimeWindow, int]] = []
    for target in TARGET_ROWS:
        reached = days[days >= target]
        if not reached.empty and reached.index[0] + timedelta(days=1) < end:
            last_day: date = reached.index[0]
            out.append((TimeWindow(start=start, end=last_day + timedelta(days=1)), int(reached.iloc[0])))
    out.append((TimeWindow(start=start, end=end), int(days.iloc[-1])))
    return out


def small_budget(config_path: Path, folder: Path) -> Path:
    raw = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    raw.setdefault("tuning", {})["n_trials"] = TRIALS
    path = folder / config_path.name
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def measure(config_path: Path) -> list[Point]:
    with tempfile.TemporaryDirectory(prefix="driftloop-bench-") as folder:
        work = Path(folder)
        config = small_budget(config_path, work)
        points = []
        with prefect_server(work / "server") as (_, env):
            for index, (window, rows) in enumerate(windows(config_path)):
                command = [sys.executable, "-m", "flows.training", "--config", str(config),
                           "--start", window.start.isoformat(), "--end", window.end.isoformat()]  # fmt: skip
                run = timed_peak(command, {**env, "DRIFTLOOP_HOME": str(work / f"home-{index}")}, work / "growth.log")
                points.append(Point(window, rows, run))
    return points


def markdown(config_path: Path, points: list[Point], plot: Path | None) -> str:
    first = points[0]
    lines = [
        "## 6. Growth: the training flow as its window grows",
        "",
        f"`{config_path.name}`, windows from its training window's start; each run its own process against one",
        f"running Prefect server, a fresh home, tuning cut to {TRIALS} trials (the same for every size). Peak",
        "memory is the flow process's own. Per 100k rows: wall time over rows, to read linearity.",
        "",
        "| window | rows | wall s | peak RSS MB | s per 100k rows | rows / first | wall / first |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for point in points:
        lines.append(
            f"| {point.window.label()} | {point.rows:,} | {point.run.wall:.1f} | {point.run.peak_rss_mb:.0f} "
            f"| {point.run.wall / point.rows * 1e5:.1f} | {point.rows / first.rows:.1f}x "
            f"| {point.run.wall / first.run.wall:.1f}x |"
        )
    last = points[-1]
    exponent = _slope([p.rows for p in points], [p.run.wall for p in points])
    lines += [
        "",
        f"From {first.rows:,} to {last.rows:,} rows ({last.rows / first.rows:.1f}x) the wall time grew "
        f"{last.run.wall / first.run.wall:.1f}x and the peak memory"
        f" {last.run.peak_rss_mb / first.run.peak_rss_mb:.1f}x;"
        f" the log-log slope of wall time on rows is {exponent:.2f} (1 is linear; below 1, fixed costs still weigh).",
    ]
    if plot is not None:
        lines += ["", f"![growth]({plot.name})"]
    return "\n".join(lines) + "\n"


def _slope(xs: list[int], ys: list[float]) -> float:
    import numpy as np

    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def draw(points: list[Point], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, wall = plt.subplots(figsize=(6, 3.5))
    rows = [p.rows / 1000 for p in points]
    wall.plot(rows, [p.run.wall for p in points], "o-", color="tab:blue", label="wall s")
    wall.set_xlabel("training rows (thousands)")
    wall.set_ylabel("wall s", color="tab:blue")
    memory = wall.twinx()
    memory.plot(rows, [p.run.peak_rss_mb for p in points], "s--", color="tab:orange", label="peak RSS MB")
    memory.set_ylabel("peak RSS MB", color="tab:orange")
    wall.set_title("training flow: wall time and peak memory by window size")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def run(config_path: Path, plot: Path | None) -> str:
    points = measure(config_path)
    return markdown(config_path, points, draw(points, plot) if plot is not None else None)


if __name__ == "__main__":
    print(run(Path(sys.argv[1] if len(sys.argv) > 1 else "configs/bikeshare.yaml"), None))
