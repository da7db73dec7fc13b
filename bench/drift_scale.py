"""Drift check at scale: our monitoring step against a full Evidently run and per-column scipy tests.

Synthetic reference and current frames of the same size, 15 numeric and 5 categorical features,
with some columns shifted in the current frame (above and below the 0.1 threshold) and the rest
unshifted. Three sides, each in its own process so its peak memory is its own:

- ours: `tasks.drift.drift_report` (every statistic vectorised on every row; Evidently's report on
  at most `monitoring.report_rows` rows per side) plus writing the HTML report;
- the peer: a plain Evidently 0.7 `DataDriftPreset` (normed Wasserstein, Jensen-Shannon, the same
  0.1 threshold) on the full frames, plus writing its HTML;
- the limit: per-column `scipy.stats.wasserstein_distance` over the reference's standard deviation
  and `scipy.spatial.distance.jensenshannon` over value shares, in numpy, no report.

Evidently is imported before the clock starts (ours and the peer), so import time is not counted.
Each child prints one JSON line: seconds of the step, peak RSS, and each column's score and flag.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.peak import peak_rss_mb
from bench.timing import REPO_ROOT, median

NUMERIC = [f"x{i}" for i in range(15)]
CATEGORICAL = [f"c{i}" for i in range(5)]
CATEGORIES = [f"v{i}" for i in range(20)]
THRESHOLD = 0.1  # Evidently's default for both methods
# the current frame's changes: column -> (kind, size); every other column is drawn as in the reference
SHIFTS: dict[str, tuple[str, float]] = {
    "x0": ("location", 0.5),
    "x1": ("location", 0.2),
    "x2": ("scale", 1.5),
    "x3": ("location", 0.03),  # a real but small change: under the threshold
    "c0": ("reweight", 0.5),
    "c1": ("new category", 0.15),
}
SIDES = ("ours", "peer", "limit")


def frames(rows: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(reference, current), seeded; `SHIFTS` applied to the current frame."""

    def draw(seed: int, shifted: bool) -> pd.DataFrame:
        rng = np.random.default_rng(seed)
        data: dict[str, Any] = {}
        for name in NUMERIC:
            values = rng.normal(0.0, 1.0, rows)
            kind, size = SHIFTS.get(name, ("", 0.0)) if shifted else ("", 0.0)
            data[name] = values * size if kind == "scale" else values + size
        weights = np.ones(len(CATEGORIES))
        for name in CATEGORICAL:
            kind, size = SHIFTS.get(name, ("", 0.0)) if shifted else ("", 0.0)
            p = weights.copy()
            if kind == "reweight":
                p[: len(p) // 2] *= 1 + 2 * size  # the first half of the categories gains weight
            values = np.asarray(CATEGORIES, dtype=object)[rng.choice(len(p), rows, p=p / p.sum())]
            if kind == "new category":
                values[rng.random(rows) < size] = "never-seen"
            data[name] = values
        return pd.DataFrame(data)

    return draw(0, shifted=False), draw(1, shifted=True)


def expected_drift(column: str) -> bool:
    kind, size = SHIFTS.get(column, ("", 0.0))
    return bool(kind) and not (kind == "location" and size < THRESHOLD)


# --------------------------------------------------------------------------- the three sides (child)


def monitoring_config() -> Any:
    """The synthetic frames' contract with the peer's fixed thresholds (so both decide alike)."""
    from bench.validation import contract
    from tasks.settings import load_config

    config = contract(load_config(REPO_ROOT / "configs/flights.yaml"))
    return config.model_copy(
        update={
            "features": config.features.model_copy(update={"numeric": NUMERIC, "categorical": CATEGORICAL}),
            "monitoring": config.monitoring.model_copy(
                update={"column_threshold": THRESHOLD, "drifted_share": 0.5, "prediction_threshold": THRESHOLD}
            ),
        }
    )


def ours(reference: pd.DataFrame, current: pd.DataFrame, html: Path, config: Any) -> dict[str, Any]:
    from tasks.drift import drift_report, evidently_scores, is_drifted

    result, snapshot = drift_report(reference, current, config, prediction_column="none")
    snapshot.save_html(str(html))
    shown = evidently_scores(snapshot.dict())
    return {
        "scores": {c.column: c.score for c in result.columns},
        "drifted": {c.column: is_drifted(c) for c in result.columns},
        "report_scores": {name: score for name, (_, score, _) in shown.items()},
        "report_drifted": {name: score >= threshold for name, (_, score, threshold) in shown.items()},
        "report_rows": list(result.report_rows) if result.report_rows else None,
    }


def peer(reference: pd.DataFrame, current: pd.DataFrame, html: Path, _: Any) -> dict[str, Any]:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    from tasks.drift import evidently_scores

    definition = DataDefinition(numerical_columns=NUMERIC, categorical_columns=CATEGORICAL)
    preset = DataDriftPreset(num_method="wasserstein", cat_method="jensenshannon", threshold=THRESHOLD)
    snapshot = Report([preset], include_tests=True).run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )
    snapshot.save_html(str(html))
    shown = evidently_scores(snapshot.dict())
    return {
        "scores": {name: score for name, (_, score, _) in shown.items()},
        "drifted": {name: score >= threshold for name, (_, score, threshold) in shown.items()},
    }


def limit(reference: pd.DataFrame, current: pd.DataFrame, *_: Any) -> dict[str, Any]:
    from scipy import stats
    from scipy.spatial import distance

    scores: dict[str, float] = {}
    for name in NUMERIC:
        ref = reference[name].to_numpy(dtype=np.float64)
        scores[name] = float(stats.wasserstein_distance(ref, current[name].to_numpy(np.float64)) / max(ref.std(), 1e-3))
    for name in CATEGORICAL:
        shares = pd.concat(
            [reference[name].value_counts(normalize=True), current[name].value_counts(normalize=True)], axis=1
        ).fillna(0.0)
        scores[name] = float(distance.jensenshannon(shares.iloc[:, 0], shares.iloc[:, 1]))
    return {"scores": scores, "drifted": {name: score >= THRESHOLD for name, score in scores.items()}}


def child(side: str, rows: int) -> dict[str, Any]:
    reference, current = frames(rows)
    data_rss = _peak_rss_mb()
    config = monitoring_config()  # not timed: a monitoring run has its config before it checks
    if side in ("ours", "peer"):
        import evidently.presets  # noqa: F401  (imported before the clock, as a long-lived worker would)

        import tasks.drift  # noqa: F401
    else:
        import scipy.spatial.distance
        import scipy.stats  # noqa: F401
    run = {"ours": ours, "peer": peer, "limit": limit}[side]
    with tempfile.TemporaryDirectory(prefix="driftloop-bench-") as folder:
        started = time.perf_counter()
        out = run(reference, current, Path(folder) / "report.html", config)
        seconds = time.perf_counter() - started
        html_bytes = (Path(folder) / "report.html").stat().st_size if side != "limit" else 0
    return {"side": side, "rows": rows, "seconds": seconds, "peak_rss_mb": _peak_rss_mb(), "data_rss_mb": data_rss,
            "html_bytes": html_bytes, **out}  # fmt: skip


def _peak_rss_mb() -> float:
    return peak_rss_mb()  # VmHWM: this process's own, not a maximum inherited from the bench's parent


# --------------------------------------------------------------------------- the parent: run, tabulate


@dataclass
class Measured:
    rows: int
    runs: dict[str, list[dict[str, Any]]]

    def seconds(self, side: str) -> list[float]:
        return [run["seconds"] for run in self.runs[side]]

    def peak(self, side: str) -> float:
        return max(run["peak_rss_mb"] for run in self.runs[side])

    def ratio_to_limit(self, side: str) -> list[float]:
        return [a / b for a, b in zip(self.seconds(side), self.seconds("limit"), strict=False)]


def _spawn(side: str, rows: int) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "")}
    done = subprocess.run(
        [sys.executable, "-m", "bench.drift_scale", "--side", side, "--rows", str(rows)],
        cwd=REPO_ROOT, env={k: v for k, v in env.items() if v}, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"drift bench {side} at {rows} rows exited {done.returncode}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(sizes: list[int], repeats: int, peer_repeats: int) -> list[Measured]:
    """Ours and the limit alternate `repeats` times per size; the peer (a minute at 1M) runs fewer."""
    results = []
    for rows in sizes:
        runs: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
        for repeat in range(repeats):
            for side in ("ours", "limit") if repeat % 2 == 0 else ("limit", "ours"):
                runs[side].append(_spawn(side, rows))
            if repeat < peer_repeats:
                runs["peer"].append(_spawn("peer", rows))
        results.append(Measured(rows, runs))
    return results


def markdown(results: list[Measured], repeats: int, peer_repeats: int) -> str:
    lines = [
        "## 3. Drift check at scale: our monitoring step, a full Evidently run and per-column scipy tests",
        "",
        "Reference and current frames of the same size, 15 numeric and 5 categorical (20 values) features;",
        f"shifted in the current frame: {', '.join(f'{c} ({k} {s:g})' for c, (k, s) in SHIFTS.items())};",
        "the other 14 unshifted. Ours is `drift_report` (the decision's statistics vectorised on every row,",
        "Evidently's HTML report on a seeded uniform sample of `monitoring.report_rows` rows per side) plus",
        "writing the HTML; the peer a plain Evidently 0.7 `DataDriftPreset` on the full frames plus its HTML;",
        "the limit per-column `scipy.stats.wasserstein_distance` / reference std and `jensenshannon` on value",
        "shares. Each run is its own process (Evidently or scipy imported before the clock); seconds of the",
        f"step, median (min-max) of {repeats} alternating runs of ours and the limit and {peer_repeats} of the",
        "peer; peak RSS of the whole process, the frames included (the frames alone: the last column).",
        "",
        "| rows per side | ours s | peer (Evidently) s | limit (scipy) s | ours / limit | peer / limit "
        "| peak RSS MB: ours / peer / limit | frames alone MB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for m in results:
        peer_ratio = median(m.seconds("peer")) / median(m.seconds("limit"))
        lines.append(
            f"| {m.rows:,} | {_cell(m.seconds('ours'))} | {_cell(m.seconds('peer'))} | {_cell(m.seconds('limit'))} "
            f"| {median(m.ratio_to_limit('ours')):.2f}x | {peer_ratio:.1f}x "
            f"| {m.peak('ours'):.0f} / {m.peak('peer'):.0f} / {m.peak('limit'):.0f} "
            f"| {max(r['data_rss_mb'] for r in m.runs['limit']):.0f} |"
        )
    lines += [
        "",
        "Agreement: each column's drift flag on the full frames, ours against the peer's and the limit's, and",
        "against what was planted (a location shift under 0.1 is planted but under the threshold). The last",
        "columns are our HTML report's own flags and the largest gap between its scores (on the sample) and",
        "the decision's (on every row): the sampling error of what the report shows.",
        "",
        "| rows per side | columns: ours = peer | ours = limit | ours = planted | report rows (ref, cur) "
        "| report flags = decision | largest report score gap |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for m in results:
        o, p, lim = m.runs["ours"][0], m.runs["peer"][0], m.runs["limit"][0]
        columns = NUMERIC + CATEGORICAL
        agree_peer = sum(o["drifted"][c] == p["drifted"][c] for c in columns)
        agree_limit = sum(o["drifted"][c] == lim["drifted"][c] for c in columns)
        agree_planted = sum(o["drifted"][c] == expected_drift(c) for c in columns)
        agree_report = sum(o["drifted"][c] == o["report_drifted"][c] for c in columns)
        gap = max(abs(o["scores"][c] - o["report_scores"][c]) for c in columns)
        shown = tuple(o["report_rows"]) if o["report_rows"] else "every row"
        lines.append(
            f"| {m.rows:,} | {agree_peer}/{len(columns)} | {agree_limit}/{len(columns)} "
            f"| {agree_planted}/{len(columns)} | {shown} | {agree_report}/{len(columns)} | {gap:.4f} |"
        )
    largest = results[-1]
    score_gap = max(
        abs(largest.runs["ours"][0]["scores"][c] - largest.runs["peer"][0]["scores"][c]) for c in NUMERIC + CATEGORICAL
    )
    lines += [
        "",
        f"At {largest.rows:,} rows the decision's scores and the full Evidently run's differ by at most"
        f" {score_gap:.1e}",
        "(the same formulas; floating point). Error bound: the decision has none from sampling (every row is",
        "read); the HTML report's scores carry the sampling error of their sample, whose size the report's",
        "summary states; the gap above is that error as measured here.",
    ]
    return "\n".join(lines) + "\n"


def _cell(values: list[float]) -> str:
    return f"{median(values):.2f} ({min(values):.2f}-{max(values):.2f})" if values else "-"


def run(sizes: list[int], repeats: int, peer_repeats: int = 1) -> str:
    return markdown(measure(sizes, repeats, peer_repeats), repeats, peer_repeats)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--side", choices=SIDES, help="run one side once and print its JSON (the child)")
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    if args.side:
        print(json.dumps(child(args.side, args.rows)))
    else:
        print(run([args.rows], args.repeats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
