"""Distributed tuning: one process against two sharing the study, the same trial budget, on PostgreSQL.

Each side runs the config's search (TPE, the median pruner, staged boosting, its space) on the
same train and validation frames, `n_trials` trials in a study of a throwaway PostgreSQL, through
the code the training run and the tuning-worker deployment use (`tasks.tune_share.take_share`).
The processes are started, load the frames and open the study before the clock starts (a barrier),
so the figure is the search itself; through the work pool each extra worker also pays its flow
run's pickup (the worker's poll, 10 s by default) and its imports, once per training run.
Sides alternate, `repeats` pairs; medians and pair-by-pair ratios. "Trial-seconds" sums each
trial's own duration: a second worker samples other points (its seed differs), so the work itself
differs a little between sides.
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from bench.timing import REPO_ROOT, median
from tasks.ingest import read_source
from tasks.settings import TrainingConfig, load_config
from tasks.split import time_split
from tasks.study_outages import spent
from tasks.threads import threads_for
from tasks.tune import make_objective, open_study
from tasks.tune_share import take_share

CONFIGS = {"configs/flights.yaml": 24, "configs/bikeshare.yaml": 24}  # trial budget per search
DEADLINE_SECONDS = 1800  # far beyond either side: the budget in trials decides


@dataclass(frozen=True)
class Side:
    workers: int
    seconds: float
    trial_seconds: float
    best: float
    by_worker: dict[str, int]


def _work(
    config_json: dict[str, Any], folder: str, storage: str, study: str, worker: int, start: Any, ready: Any
) -> None:
    """One tuning process: read the frames, open the study, wait for the start, spend its share."""
    config = TrainingConfig.model_validate(config_json)
    train, valid = (pd.read_parquet(Path(folder) / f"{name}.parquet") for name in ("train", "validation"))
    objective = make_objective(config, train, valid)
    shared = open_study(config, storage, study, worker=worker)
    ready.release()
    start.wait()
    take_share(shared, objective, config.tuning.n_trials, time.time() + DEADLINE_SECONDS, f"w{worker}", 0.5)


def side(config: TrainingConfig, folder: str, storage: str, workers: int, label: str) -> Side:
    context = multiprocessing.get_context("spawn")  # fresh processes, as on separate machines
    start, ready = context.Event(), context.Semaphore(0)
    config = config.model_copy(update={"tuning": config.tuning.model_copy(update={"workers": workers})})
    study = f"{label}-{workers}w-{time.time_ns()}"
    open_study(config, storage, study)  # created once, joined by every process
    processes = [
        context.Process(target=_work, args=(config.model_dump(mode="json"), folder, storage, study, n, start, ready))
        for n in range(workers)
    ]
    for process in processes:
        process.start()
    for _ in processes:
        ready.acquire()
    began = time.monotonic()
    start.set()
    for process in processes:
        process.join()
        if process.exitcode != 0:
            raise RuntimeError(f"a tuning process of {study} exited with {process.exitcode}")
    seconds = time.monotonic() - began
    trials = optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
    if spent(trials) != config.tuning.n_trials:
        raise RuntimeError(f"{study}: {spent(trials)} trials used the budget, not {config.tuning.n_trials}")
    durations = [t.duration.total_seconds() for t in trials if t.duration is not None]
    values = [t.value for t in trials if t.value is not None]
    by_worker = Counter(str(t.user_attrs.get("worker")) for t in trials)
    return Side(
        workers=workers,
        seconds=seconds,
        trial_seconds=sum(durations),
        best=(max if config.higher_is_better else min)(values),
        by_worker=dict(by_worker),
    )


Compared = tuple[TrainingConfig, int, list[tuple[Side, Side]]]  # the config run, its train rows, the pairs


def compare(config_path: Path, n_trials: int, storage: str, repeats: int) -> Compared:
    loaded = load_config(config_path)
    config = loaded.model_copy(update={"tuning": loaded.tuning.model_copy(update={"n_trials": n_trials})})
    frame = read_source(config, config.window)
    frame = frame[frame[config.target].notna()].reset_index(drop=True)
    splits = time_split(frame, config.timestamp, config.split)
    pairs = []
    with tempfile.TemporaryDirectory(prefix="driftloop-bench-tuning-") as folder:
        splits.train.to_parquet(Path(folder) / "train.parquet", index=False)
        splits.validation.to_parquet(Path(folder) / "validation.parquet", index=False)
        for repeat in range(repeats):
            order = (1, 2) if repeat % 2 == 0 else (2, 1)
            measured = {n: side(config, folder, storage, n, config.name) for n in order}
            pairs.append((measured[1], measured[2]))
    return config, len(splits.train), pairs


def markdown(results: dict[str, Compared]) -> str:
    lines = [
        "## 8. Distributed tuning: one process against two sharing the study in PostgreSQL, same trial budget",
        "",
        "The config's search through `take_share` (the code of the training run and the tuning-worker",
        "deployment), its trial budget spent by one process or by two on this machine's two cores; the",
        "processes are ready before the clock starts, so the work pool's pickup of a worker run is not",
        "in it. Speed-up: one process's wall time over two's, pair by pair.",
        "",
        "| config | train rows | threads per fit | trials | 1 process s | 2 processes s | speed-up "
        "| trial-seconds 1 / 2 | best 1 / 2 | trials by worker (2) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, (config, rows, pairs) in results.items():
        one, two = [p[0] for p in pairs], [p[1] for p in pairs]
        ratios = [a.seconds / b.seconds for a, b in pairs]
        lines.append(
            f"| {name} | {rows} | {threads_for(rows, config.model.threads)} | {config.tuning.n_trials} "
            f"| {median([s.seconds for s in one]):.1f} | {median([s.seconds for s in two]):.1f} "
            f"| {median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) "
            f"| {median([s.trial_seconds for s in one]):.1f} / {median([s.trial_seconds for s in two]):.1f} "
            f"| {median([s.best for s in one]):.4f} / {median([s.best for s in two]):.4f} "
            f"| {', '.join(f'{k} {v}' for k, v in sorted(two[-1].by_worker.items()))} |"
        )
    return "\n".join(lines) + "\n"


def run(configs: dict[str, int], repeats: int) -> str:
    from tests.postgres import postgres_cluster  # the throwaway cluster the server-shape tests use

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    results = {}
    with postgres_cluster() as cluster:
        storage = cluster.create_database("optuna")
        for path, n_trials in configs.items():
            results[Path(path).name] = compare(REPO_ROOT / path, n_trials, storage, repeats)
    return markdown(results)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(run(CONFIGS, args.repeats))
