"""What a replay shows, as files under the home folder and as Prefect artifacts.

The period table, the lines' quality and cost, the frontier and the loop's regret, and a two-panel plot.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from tasks.frontier import Frontier
from tasks.notify import artifact_key
from tasks.replay import PeriodRow, ReplaySummary, as_records
from tasks.replay_goal import GoalCheck, goal_checks
from tasks.settings import TrainingConfig
from tasks.stores import Stores

FULL_FRONTIER_UP_TO = 24  # longer frontiers are shown at chosen K; frontier.csv has every K


def _number(value: float | None, digits: int = 4) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def table_markdown(rows: list[PeriodRow], metric: str) -> str:
    head = (
        f"| period | champion | rows | {metric} loop | static | always retrain | drift | signals | drift share "
        "| retrain started | promoted | why | event to run start (s) | retrain CPU (s) |"
    )
    lines = [head, "|" + " --- |" * 14]
    for r in rows:
        promoted = "-" if r.promoted is None else ("yes" if r.promoted else "no")
        lines.append(
            f"| {r.period} | v{r.champion_version} | {r.rows} | {_number(r.loop)} | {_number(r.static)} "
            f"| {_number(r.always)} | {r.drift} | {r.signals} | {_number(r.drift_share, 2)} "
            f"| {'yes' if r.retrain_started else 'no'} "
            f"| {promoted} | {r.why[:90]} | {_number(r.event_to_start_seconds, 1)} "
            f"| {_number(r.retrain_cpu_seconds, 1)} |"
        )
    return "\n".join(lines) + "\n"


def lines_markdown(summary: ReplaySummary, metric: str) -> str:
    counted = sum(summary.counted)
    lines = [
        f"| line | mean {metric} ({counted} of {len(summary.rows)} periods) | retrains | promoted "
        "| training CPU of the retrains (s) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for line in summary.lines:
        lines.append(
            f"| {line.name} | {_number(line.mean)} | {'-' if line.retrains is None else line.retrains} "
            f"| {'-' if line.promoted is None else line.promoted} | {_number(line.cpu_seconds, 1)} |"
        )
    first = _number(summary.initial_cpu_seconds, 1)
    return "\n".join(lines) + f"\n\nEvery line starts from the same first champion (its training: {first} CPU s).\n"


def shown_retrains(frontier: Frontier, marks: list[int]) -> list[int]:
    """Every K of a short frontier; for a long one the first dozen, tenths, the best and `marks`."""
    n = frontier.periods
    if n <= FULL_FRONTIER_UP_TO:
        return list(range(n + 1))
    chosen = set(range(13)) | set(range(0, n + 1, max(1, n // 10))) | {n, frontier.best_retrains()}
    return sorted(k for k in chosen | set(marks) if 0 <= k <= n)


def frontier_markdown(summary: ReplaySummary, period_labels: list[str]) -> str:
    frontier = summary.frontier
    if frontier is None:
        return ""
    loop = summary.line("driftloop")
    promoted, started = summary.serving_promotions, summary.serving_retrains
    lines = [
        f"Hindsight frontier: the best mean any schedule of K retrains could have reached ({summary.recipe}; "
        "the loop's tuned models may beat it).",
        "",
        "| K retrains | best mean | one schedule reaching it (retrain at the start of) |",
        "| --- | --- | --- |",
    ]
    for k in shown_retrains(frontier, [promoted, started]):
        schedule = ", ".join(period_labels[s].split("..")[0] for s in sorted(frontier.schedules[k])) or "never"
        lines.append(f"| {k} | {_number(frontier.best_mean[k])} | {schedule} |")
    regret_promoted = frontier.regret(promoted, loop.mean)
    regret_started = frontier.regret(started, loop.mean)
    lines += [
        "",
        f"Loop regret (the frontier minus the loop; positive: the loop did worse than the best schedule of its size): "
        f"{_number(regret_promoted)} at its {promoted} promotions, {_number(regret_started)} at its "
        f"{started} retrains started (those that served a replayed period); the best schedule "
        f"({frontier.best_retrains()} retrains) reaches {_number(frontier.at(frontier.best_retrains()))}.",
    ]
    if regret_promoted < 0:
        lines.append("The loop is above the frontier at its promotions: its tuned models beat the frontier's recipe.")
    return "\n".join(lines) + "\n"


def plot_replay(summary: ReplaySummary, metric: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # no screen here, and none needed
    import matplotlib.pyplot as plt

    rows = summary.rows
    starts = [r.period.split("..")[0] for r in rows]
    panels = 2 if summary.frontier is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(9 + 5 * (panels - 1), 4.5), dpi=110, squeeze=False)
    ax = axes[0][0]
    ax.plot(starts, [r.loop for r in rows], marker="o", label="driftloop (drift-triggered, gated)")
    if any(line.name == "static" for line in summary.lines):
        ax.plot(starts, [r.static for r in rows], marker="s", linestyle="--", label="static (never retrained)")
    if any(line.name == "always" for line in summary.lines):
        ax.plot(starts, [r.always for r in rows], marker="^", linestyle=":", label="retrain every period, no gate")
    for i, r in enumerate(rows):
        if r.retrain_started:  # drift found at the end of period i: the retrained model serves period i+1
            ax.axvline(i + 0.5, color="grey", alpha=0.3, linewidth=4)
    ax.plot([], [], color="grey", alpha=0.3, linewidth=4, label="drift found: retrain before the next period")
    ax.set_title(f"{metric} of each period's champion on that period")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    if summary.frontier is not None:
        _plot_frontier(axes[0][1], summary, metric)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _plot_frontier(ax: object, summary: ReplaySummary, metric: str) -> None:
    frontier = summary.frontier
    assert frontier is not None
    ax.plot(range(frontier.periods + 1), frontier.best_mean, color="black", label="hindsight frontier")  # type: ignore[attr-defined]
    for line, marker in (("static", "s"), ("always", "^")):
        found = [x for x in summary.lines if x.name == line]
        if found and found[0].retrains is not None:
            ax.scatter([found[0].retrains], [found[0].mean], marker=marker, s=60, label=line, zorder=3)  # type: ignore[attr-defined]
    loop = summary.line("driftloop")
    promoted, started = summary.serving_promotions, summary.serving_retrains
    ax.scatter([promoted], [loop.mean], marker="o", s=70, label="driftloop at its promotions", zorder=3)  # type: ignore[attr-defined]
    ax.scatter(  # type: ignore[attr-defined]
        [started], [loop.mean], marker="o", s=70, facecolors="none", edgecolors="C3",
        label="driftloop at its retrains started", zorder=3,
    )  # fmt: skip
    ax.set_title(f"mean {metric} against the number of retrains")  # type: ignore[attr-defined]
    ax.set_xlabel("retrains")  # type: ignore[attr-defined]
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # type: ignore[attr-defined]
    ax.set_ylabel(f"mean {metric}")  # type: ignore[attr-defined]
    ax.grid(alpha=0.3)  # type: ignore[attr-defined]
    ax.legend(loc="best", fontsize=8)  # type: ignore[attr-defined]


def goal_markdown(checks: list[GoalCheck], tolerance: float) -> str:
    head = f"Goal (tolerance {tolerance:g} in the metric's units):\n"
    lines = [head, "| criterion | met | detail |", "| --- | --- | --- |"]
    for check in checks:
        met = "not measured" if check.met is None else ("yes" if check.met else "**no**")
        lines.append(f"| {check.criterion} | {met} | {check.detail} |")
    return "\n".join(lines) + "\n"


def summary_markdown(config: TrainingConfig, summary: ReplaySummary, seconds: float, plot: Path) -> str:
    rows = summary.rows
    span = f"{rows[0].period.split('..')[0]}..{rows[-1].period.split('..')[1]}" if rows else "-"
    assert config.replay is not None
    parts = [
        f"# Replay of {config.model_name} ({config.name}): {len(rows)} {config.replay.period}(s), {span}, "
        f"labels {config.replay.label_delay_periods} period(s) late\n",
        table_markdown(rows, config.gate.metric),
        lines_markdown(summary, config.gate.metric),
        frontier_markdown(summary, [r.period for r in rows]),
        goal_markdown(goal_checks(summary, config.higher_is_better, config.replay.tolerance), config.replay.tolerance),
    ]
    if summary.notes:
        parts.append("Notes:\n" + "\n".join(f"- {note}" for note in summary.notes) + "\n")
    parts.append(f"Wall time {seconds:.0f} s. Plot: {plot}\n")
    return "\n".join(part for part in parts if part)


@task(cache_policy=NO_CACHE)
def publish_replay(config: TrainingConfig, summary: ReplaySummary, stores: Stores, seconds: float) -> Path:
    """summary.{md,csv}, frontier.csv and quality.png under <home>/replay/<dataset>/, and as Prefect artifacts."""
    folder = stores.home / "replay" / config.name
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(as_records(summary)).to_csv(folder / "summary.csv", index=False)
    if summary.frontier is not None:
        pd.DataFrame(
            {
                "retrains": range(summary.frontier.periods + 1),
                "best_mean": summary.frontier.best_mean,
                "schedule": [" ".join(rows_label(summary, s)) for s in summary.frontier.schedules],
            }
        ).to_csv(folder / "frontier.csv", index=False)
    plot = plot_replay(summary, config.gate.metric, folder / "quality.png")
    markdown = summary_markdown(config, summary, seconds, plot)
    (folder / "summary.md").write_text(markdown)
    create_table_artifact(
        as_records(summary), key=artifact_key("replay", config.name), description=f"replay of {config.model_name}"
    )
    create_markdown_artifact(markdown, key=artifact_key("replay-summary", config.name))
    get_run_logger().info("replay summary written to %s", folder)
    return folder


def rows_label(summary: ReplaySummary, schedule: tuple[int, ...]) -> list[str]:
    return [summary.rows[s].period.split("..")[0] for s in sorted(schedule)]
