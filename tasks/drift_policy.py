"""The drift policy, pure: a `DriftResult`, the `MonitoringConfig`, the last alert and "now" in, a decision out.

Tested without data (tests/unit/test_drift_policy.py); the measurements are tasks/drift.py's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from tasks.drift import ColumnDrift, DriftResult, beyond_chance, drifted_share, is_drifted
from tasks.settings import MonitoringConfig

DriftStatus = Literal["drift", "no_drift", "insufficient_data", "cooldown"]
# a signal's sentence starts with its label (see `_signals`); the decision names it by the key here
SIGNAL_NAMES = {
    "feature drift": "features",
    "prediction drift": "prediction",
    "label drift": "label",
    "performance drop": "performance",
}


@dataclass(frozen=True)
class DriftDecision:
    """What the policy concluded, whether to retrain, and every reason in words."""

    status: DriftStatus
    retrain: bool
    reasons: list[str]
    fired: tuple[str, ...] = ()  # the signals that fired, by name: features, prediction, label, performance


def require_aware(moment: datetime, name: str) -> datetime:
    """Naive datetimes are refused: a local `now()` read as UTC would shift the cool-down by hours."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {moment.isoformat()}")
    return moment


def decide_drift(
    result: DriftResult,
    policy: MonitoringConfig,
    last_alert_at: datetime | None,
    as_of: datetime,
) -> DriftDecision:
    """The drift policy, pure. Every triggered signal is reported, not just the first.

    1. Fewer than `min_rows` current rows: insufficient data, whatever the scores say.
    2. Signals: at least `result.min_drifted` drifted features (the calibrated count, or
       `drifted_share` of the features where the config fixes it), or one feature past
       `alone_ratio` times its threshold; the prediction or the label past its threshold; a
       performance drop whose lower confidence bound (the point drop where none was measured) is
       > `max_performance_drop` (strictly: a drop equal to the allowance is allowed). Drifted
       features are recounted with `is_drifted`, so a NaN score counts.
    3. No signal: no drift. Signals, but an alert less than `cooldown_hours` before `as_of`: cool-down
       (no retrain; the window is half-open, so at exactly its end a new alert goes through). An alert
       stamped after `as_of` (a backfilled check) also blocks. Otherwise: drift, retrain.
    """
    require_aware(as_of, "as_of")
    if last_alert_at is not None:
        require_aware(last_alert_at, "last_alert_at")
    if result.rows_current < policy.min_rows:
        return DriftDecision(
            "insufficient_data",
            retrain=False,
            reasons=[f"insufficient data: {result.rows_current} current rows, at least {policy.min_rows} needed"],
        )
    signals, notes = _signals(result, policy)
    fired = tuple(SIGNAL_NAMES[s.split(":", 1)[0]] for s in signals)
    if not signals:
        return DriftDecision("no_drift", retrain=False, reasons=notes)
    if last_alert_at is not None and policy.cooldown_hours > 0:
        ends = last_alert_at + timedelta(hours=policy.cooldown_hours)
        if as_of < ends:
            cooldown = f"cool-down: last alert at {last_alert_at.isoformat()}, no retraining before {ends.isoformat()}"
            return DriftDecision("cooldown", retrain=False, reasons=[*signals, cooldown], fired=fired)
    return DriftDecision("drift", retrain=True, reasons=signals, fired=fired)


def _signals(result: DriftResult, policy: MonitoringConfig) -> tuple[list[str], list[str]]:
    """(triggered signals, notes on the signals that did not trigger), both as sentences.

    Each threshold is the one the measurement applied (calibrated or fixed), carried in the result,
    so the decision and the report cannot disagree.
    """
    signals: list[str] = []
    notes: list[str] = []

    drifted = result.drifted_columns()
    share = drifted_share(result.columns) if result.columns else result.drifted_share
    needed = _features_needed(result, policy)
    share_text = f"{len(drifted)}/{len(result.columns)} features drifted (share {share:.2f})"
    alone = [c for c in drifted if math.isfinite(c.score) and c.score >= result.alone_ratio * c.threshold]
    if not math.isfinite(share) or len(drifted) >= needed:
        names = ", ".join(_column_text(c) for c in drifted) or "no feature could be scored"
        signals.append(f"feature drift: {share_text}, {needed} needed: {names}")
    elif alone:
        names = ", ".join(_column_text(c) for c in alone)
        signals.append(
            f"feature drift: {names}, past {result.alone_ratio:.1f}x its threshold, "
            f"further than chance takes any feature ({share_text}, {needed} needed otherwise)"
        )
    else:
        notes.append(f"features: {share_text}, {needed} needed")

    for name, single in (("prediction", result.prediction), ("label", result.label)):
        if single is None:
            notes.append(f"{name}: not measured")
        elif is_drifted(single):
            signals.append(f"{name} drift: {single.method} {beyond_chance(single)}")
        else:
            notes.append(f"{name}: {single.method} {beyond_chance(single)}")

    if (perf := result.performance) is not None:
        measured = f"{perf.metric} {perf.current_value:.4f} vs {perf.reference_value:.4f} at training"
        allowance = policy.max_performance_drop
        bound = f", at least {perf.drop_low:.4f} beyond noise" if math.isfinite(perf.drop_low) else ""
        # beyond noise: the interval's lower bound passes the allowance (the point drop where no bound)
        worse = perf.drop_low if math.isfinite(perf.drop_low) else perf.drop
        if not math.isfinite(perf.drop):
            notes.append(f"performance: not measurable ({measured}, {perf.labelled_rows} labelled rows)")
        elif worse > allowance:
            signals.append(
                f"performance drop: {measured}, worse by {perf.drop:.4f}{bound} > {allowance:.4f} "
                f"({perf.labelled_rows} labelled rows)"
            )
        else:
            notes.append(f"performance: {measured}, drop {perf.drop:.4f}{bound}, allowance {allowance:.4f}")
    else:
        notes.append("performance: not enough labelled rows yet")
    return signals, notes


def _features_needed(result: DriftResult, policy: MonitoringConfig) -> int:
    """How many drifted features make feature drift: the measurement's rule, else the policy's share."""
    if result.min_drifted is not None:
        return result.min_drifted
    if policy.drifted_share is None:
        raise ValueError("the drift result carries no share rule and monitoring.drifted_share is not set")
    return max(1, math.ceil(policy.drifted_share * len(result.columns) - 1e-9))


def _column_text(column: ColumnDrift) -> str:
    """A drifted feature and why: its distance beyond chance, or its rate statistics."""
    parts = [f"{column.column} {beyond_chance(column)}"] if column.score >= column.threshold else [column.column]
    parts += list(column.quality)
    return " ".join(parts[:1]) + (f" ({'; '.join(parts[1:])})" if len(parts) > 1 else "")
