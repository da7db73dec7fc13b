"""The training flow's ML work as a plain script: no Prefect, no MLflow, no validation, no artifacts.

The same data (the config's window, derived columns computed), the same split, the same Optuna
study (sampler, pruner, seed, trial budget, journal storage), the same final fit, holdout metrics
and explanations, through the same pure functions the flow's tasks call. What the flow spends
beyond this is orchestration. Prints one JSON line: seconds per stage and the holdout metric.

    python -m bench.plain_training --config configs/flights.yaml
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pandas as pd

from tasks.explain import explain_model
from tasks.ingest import read_source
from tasks.model import compute_metrics, features_and_target, fit_pipeline, model_classes, predict_scores
from tasks.settings import load_config
from tasks.split import time_split
from tasks.tune import run_study


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    args = parser.parse_args(argv)
    stages: dict[str, float] = {}
    started = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal started
        now = time.perf_counter()
        stages[name] = round(now - started, 3)
        started = now

    config = load_config(Path(args.config))
    frame = read_source(config, config.window)
    frame = frame[frame[config.target].notna()].reset_index(drop=True)
    lap("load")
    splits = time_split(frame, config.timestamp, config.split)
    lap("split")
    with tempfile.TemporaryDirectory() as folder:
        tuning = run_study(config, splits, f"journal:{folder}/journal.log", "plain", None)
    lap("tune")
    fit_frame = pd.concat([splits.train, splits.validation], ignore_index=True)
    params = {**config.model.params, **tuning.best_params}
    pipeline = fit_pipeline(config, params, *features_and_target(config, fit_frame))
    lap("fit")
    features, target = features_and_target(config, splits.holdout)
    metrics = compute_metrics(
        config.task, target, predict_scores(pipeline, features, config.task), model_classes(pipeline)
    )
    lap("evaluate")
    explain_model(config, pipeline, splits.holdout)
    lap("explain")
    print(json.dumps({"stages": stages, "trials": tuning.n_trials, "holdout": metrics[config.gate.metric]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
