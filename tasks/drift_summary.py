"""A drift check presented: the markdown summary for the Prefect UI, the Evidently HTML report in the store."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

from tasks.drift import ColumnDrift, DriftResult, beyond_chance, is_drifted, score_key
from tasks.drift_policy import DriftDecision, DriftStatus
from tasks.stores import DataStore

_HEADLINE: dict[DriftStatus, str] = {
    "drift": "DRIFT: retraining triggered",
    "no_drift": "No drift",
    "insufficient_data": "Insufficient data: no conclusion",
    "cooldown": "Drift, inside the cool-down: no retraining",
}


def summary_markdown(
    result: DriftResult, decision: DriftDecision, report_uri: str | None, title: str, top: int = 10
) -> str:
    """A short markdown summary for a Prefect artifact: decision, reasons, top columns, links."""
    lines = [f"# {title}", "", f"**{_HEADLINE[decision.status]}**", ""]
    lines += [f"- {_md(reason)}" for reason in decision.reasons]
    lines += ["", f"Rows: {result.rows_current} current, {result.rows_reference} reference.", ""]
    if result.columns:
        ranked = sorted(result.columns, key=score_key, reverse=True)[:top]
        lines += [
            f"Drifted features: {len(result.drifted_columns())}/{len(result.columns)} "
            f"(share {result.drifted_share:.2f}). Top scores:",
            "",
            "| column | method | score | threshold | score / threshold | drifted | rates beyond chance |",
            "| --- | --- | ---: | ---: | ---: | --- | --- |",
        ]
        lines += [
            f"| {_md(c.column)} | {c.method} | {c.score:.4f} | {c.threshold:.3f} | {_ratio(c)} "
            f"| {'yes' if is_drifted(c) else 'no'} | {_md('; '.join(c.quality))} |"
            for c in ranked
        ]
        lines.append("")
        if result.min_drifted is not None:
            alone = f", or one at {result.alone_ratio:.1f}x its threshold" if math.isfinite(result.alone_ratio) else ""
            lines += [f"Feature drift needs {result.min_drifted} drifted features{alone}.", ""]
    for name, single in (("Prediction", result.prediction), ("Label", result.label)):
        if single is not None:
            flag = "drifted" if is_drifted(single) else "stable"
            lines.append(f"{name} drift: {single.method} {beyond_chance(single)}, {flag}.")
        else:
            lines.append(f"{name} drift: not measured.")
    if (perf := result.performance) is not None:
        lines.append(
            f"Performance: {perf.metric} {perf.current_value:.4f} on {perf.labelled_rows} labelled rows, "
            f"{perf.reference_value:.4f} at training (drop {perf.drop:+.4f}, positive = worse"
            + (f"; lower confidence bound {perf.drop_low:+.4f}" if math.isfinite(perf.drop_low) else "")
            + ")."
        )
    else:
        lines.append("Performance: not enough labelled rows yet.")
    lines += ["", _report_line(result, report_uri)]
    return "\n".join(lines) + "\n"


def _report_line(result: DriftResult, report_uri: str | None) -> str:
    if not report_uri:
        return "Report: none (Evidently not run)."
    line = f"Report: [{report_uri}]({report_uri})"
    if result.report_rows is not None:
        shown_reference, shown_current = result.report_rows
        line += (
            f", Evidently on a uniform sample of {shown_current} current and {shown_reference} reference rows"
            " (the decision above used every row)"
        )
    return line + "."


def _ratio(column: ColumnDrift) -> str:
    return f"{column.score / column.threshold:.2f}" if column.threshold > 0 else "-"


def _md(text: str) -> str:
    """Table cells must not contain a bare pipe."""
    return text.replace("|", "\\|")


def save_report_html(snapshot: Any, store: DataStore, dataset: str, name: str) -> str:
    """Evidently writes to a local path only: render to a temp file, then put the bytes in the store."""
    with tempfile.TemporaryDirectory(prefix="driftloop-report-") as folder:
        path = Path(folder) / "report.html"
        snapshot.save_html(str(path))
        data = path.read_bytes()
    return store.put("reports", dataset, f"{name}.html", data)
