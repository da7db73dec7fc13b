"""Does the loop earn its keep on this history? The decision goal, checked on one replay (pure).

Four criteria, in the gate metric's units with the replay's `tolerance` as slack (a positive
difference below always means the loop did better, whichever way the metric points):
1. quality: the loop's mean is no worse than retraining every period by more than the tolerance;
2. cost: it started at most half as many retrains as retraining every period fitted;
3. periods: in none is the loop worse than the static model by more than the tolerance;
4. promotions: no new champion is worse than the one it replaced, on its first period, by more
   than the tolerance.
A criterion whose line was not drawn (no `always` or `static` baseline) is unmeasured, not met.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tasks.replay import ReplaySummary


@dataclass(frozen=True)
class GoalCheck:
    criterion: str
    met: bool | None  # None: not measurable on this replay
    detail: str


def goal_checks(summary: ReplaySummary, higher_is_better: bool, tolerance: float) -> list[GoalCheck]:
    sign = 1.0 if higher_is_better else -1.0
    lines = {line.name: line for line in summary.lines}
    loop, always, static = lines.get("driftloop"), lines.get("always"), lines.get("static")
    checks = []
    if loop is None or always is None or not (math.isfinite(loop.mean) and math.isfinite(always.mean)):
        checks.append(GoalCheck("quality within tolerance of always", None, "always was not measured"))
        checks.append(GoalCheck("at most half of always's retrains", None, "always was not measured"))
    else:
        behind = sign * (always.mean - loop.mean)
        checks.append(
            GoalCheck(
                "quality within tolerance of always",
                behind <= tolerance,
                f"loop {loop.mean:.4f}, always {always.mean:.4f}: "
                + (f"behind by {behind:.4f}" if behind > 0 else f"ahead by {-behind:.4f}"),
            )
        )
        started, refits = loop.retrains or 0, always.retrains or 0
        checks.append(
            GoalCheck(
                "at most half of always's retrains",
                started <= refits / 2,
                f"{started} retrains started, always fitted {refits}",
            )
        )
    counted = [row for row, kept in zip(summary.rows, summary.counted, strict=True) if kept]
    if static is None:
        checks.append(GoalCheck("no period worse than static", None, "static was not measured"))
    else:
        worse = [r for r in counted if math.isfinite(r.static) and sign * (r.static - r.loop) > tolerance]
        checks.append(
            GoalCheck(
                "no period worse than static",
                not worse,
                "; ".join(f"{r.period} v{r.champion_version} {r.loop:.4f}, static {r.static:.4f}" for r in worse)
                or f"{len(counted)} periods",
            )
        )
    judged = [r for r in summary.rows if math.isfinite(r.replaced) and math.isfinite(r.loop)]
    regressed = [r for r in judged if sign * (r.replaced - r.loop) > tolerance]
    checks.append(
        GoalCheck(
            "no promotion worse than what it replaced",
            not regressed if judged else None,
            "; ".join(f"{r.period} v{r.champion_version} {r.loop:.4f}, replaced {r.replaced:.4f}" for r in regressed)
            or (f"{len(judged)} promotions judged on their first period" if judged else "no promotion served a period"),
        )
    )
    return checks
