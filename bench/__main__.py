"""`make bench`: run the benchmarks and write BENCHMARKS.md (python -m bench [--repeats N] [--output FILE])."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from bench import (
    cli,
    drift_scale,
    growth,
    make_run,
    overhead,
    serving,
    shared_tuning,
    trigger_latency,
    tuning,
    validation,
)
from bench.timing import REPO_ROOT, machine

OVERHEAD_CONFIGS = ["configs/flights.yaml", "configs/bikeshare.yaml"]  # make run's window, and a small dataset
TUNING_BUDGETS = {"configs/flights.yaml": 40.0, "configs/bikeshare.yaml": 25.0}  # seconds per search
TUNING_SEEDS = [1, 2]
VALIDATION_ROWS = 1_000_000
VALIDATION_BASE = "configs/flights.yaml"  # the synthetic contract keeps its other sections
CLI_CONFIG = "configs/bikeshare.yaml"
TRIGGER_CONFIG = "configs/flights.yaml"
DEFAULT_POLL_EVENTS = 6  # Prefect's default runner poll (10 s), for comparison: fewer events suffice
LOCAL_POLL = 2  # the runner poll the local stack sets: the goal is judged here, on --events events
DRIFT_ROWS = [10_000, 100_000, 1_000_000]
GROWTH_CONFIG = "configs/flights.yaml"
RUN_CONFIG = "configs/flights.yaml"  # make run's default
SERVING_REPEATS = 2  # locust runs per load and side: the section stays near 6 minutes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3, help="alternating pairs per comparison (default 3)")
    parser.add_argument(
        "--events", type=int, default=20, help="drift events timed at the local stack's runner poll (default 20)"
    )
    parser.add_argument("--output", default=str(REPO_ROOT / "BENCHMARKS.md"))
    args = parser.parse_args(argv)
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    started = time.monotonic()
    output = Path(args.output)
    sections = [
        overhead.run([REPO_ROOT / path for path in OVERHEAD_CONFIGS], args.repeats),
        tuning.run({REPO_ROOT / path: budget for path, budget in TUNING_BUDGETS.items()}, TUNING_SEEDS),
        drift_scale.run(DRIFT_ROWS, args.repeats),
        validation.run(REPO_ROOT / VALIDATION_BASE, VALIDATION_ROWS, args.repeats),
        trigger_latency.run(REPO_ROOT / TRIGGER_CONFIG, {10: DEFAULT_POLL_EVENTS, LOCAL_POLL: args.events}),
        growth.run(REPO_ROOT / GROWTH_CONFIG, output.with_name(f"{output.stem}-growth.png")),
        make_run.run(REPO_ROOT / RUN_CONFIG),
        cli.run(REPO_ROOT / CLI_CONFIG, max(5, args.repeats)),
        shared_tuning.run(shared_tuning.CONFIGS, args.repeats),
        serving.run(min(args.repeats, SERVING_REPEATS)),
    ]
    text = "\n".join(
        [
            "# driftloop benchmarks",
            "",
            f"Written by `make bench` (`{Path(sys.executable).name} -m bench --repeats {args.repeats}"
            f" --events {args.events}`)",
            f"on {machine()}, in {(time.monotonic() - started) / 60:.1f} minutes.",
            "Every comparison alternates its two sides in one run and quotes medians and pair-by-pair ratios:",
            "this machine's speed drifts by 2x from hour to hour, so a lone absolute time means little.",
            "",
            *sections,
        ]
    )
    output.write_text(text, encoding="utf-8")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
