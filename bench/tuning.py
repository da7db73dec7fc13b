"""Tuning efficiency: our Optuna study against scikit-learn's `RandomizedSearchCV`, same wall-time budget.

Both search the config's space for the config's model family on the same preprocessed train and
validation splits, score with the same metric function, and run on the same OpenMP threads.
Ours is `tasks.tune.run_study` as configured (TPE with its seed, the median pruner fed by staged
boosting) with the budget in seconds instead of trials. The peer is `RandomizedSearchCV` over the
same ranges (log-uniform where the space is log-scaled), validated on the same split
(`PredefinedSplit`), run in blocks of candidates until the budget is spent: it has no time limit
of its own, so a candidate counts only when it finished inside the budget (its measured fit and
score times, in order). Each side's best parameters are then fitted on train + validation and
scored on the holdout, as the training flow does. "Time to the peer's best": the first moment
each side's best validation score so far reached the peer's final best.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import loguniform, randint, uniform
from sklearn.model_selection import PredefinedSplit, RandomizedSearchCV

from bench.timing import median
from tasks.ingest import read_source
from tasks.model import (
    compute_metrics,
    estimator,
    features_and_target,
    fit_pipeline,
    model_classes,
    predict_scores,
    preprocessor,
)
from tasks.settings import ParamRange, TrainingConfig, load_config
from tasks.split import Splits, time_split
from tasks.threads import model_threads
from tasks.train import holdout_metric
from tasks.tune import run_study

PEER_BLOCK = 4  # candidates per RandomizedSearchCV call; the last block may run past the budget


@dataclass(frozen=True)
class Search:
    """One side's search: (seconds since its start, validation score) per finished candidate."""

    finished: list[tuple[float, float]]
    best_params: dict[str, Any]
    holdout: float

    def best(self, higher_is_better: bool) -> float:
        scores = [score for _, score in self.finished]
        return max(scores) if higher_is_better else min(scores)

    def time_to(self, target: float, higher_is_better: bool) -> float | None:
        for seconds, score in self.finished:
            if (score >= target) if higher_is_better else (score <= target):
                return seconds
        return None


@dataclass(frozen=True)
class Duel:
    config: str
    seed: int
    budget: float
    ours: Search
    peer: Search
    higher_is_better: bool

    @property
    def peer_best(self) -> float:
        return self.peer.best(self.higher_is_better)

    @property
    def time_ratio(self) -> float | None:
        """Our time to the peer's best over the peer's; None when we never reached it."""
        ours = self.ours.time_to(self.peer_best, self.higher_is_better)
        peer = self.peer.time_to(self.peer_best, self.higher_is_better)
        return None if ours is None or not peer else ours / peer


def distribution(dim: ParamRange) -> Any:
    """The peer's sampling distribution for one dimension of our space."""
    if dim.type == "categorical":
        return list(dim.choices or [])
    low, high = float(dim.low or 0), float(dim.high or 0)
    if dim.type == "int":
        return randint(int(low), int(high) + 1)
    return loguniform(low, high) if dim.log else uniform(low, high - low)


def _holdout(config: TrainingConfig, splits: Splits, params: dict[str, Any]) -> float:
    fit_frame = pd.concat([splits.train, splits.validation], ignore_index=True)
    pipeline = fit_pipeline(config, {**config.model.params, **params}, *features_and_target(config, fit_frame))
    return holdout_metric(config, pipeline, splits.holdout)  # as the training flow scores its candidate


def ours(config: TrainingConfig, splits: Splits, budget: float, seed: int) -> Search:
    tuning = config.tuning.model_copy(update={"n_trials": 2000, "timeout_seconds": max(1, round(budget)), "seed": seed})
    timed_config = config.model_copy(update={"tuning": tuning})
    finished: list[tuple[float, float]] = []
    started = time.perf_counter()

    def record(study: Any, trial: Any) -> None:
        seconds = time.perf_counter() - started  # Optuna lets the trial running at the timeout finish
        if trial.value is not None and trial.state.name == "COMPLETE" and seconds <= budget:
            finished.append((seconds, float(trial.value)))

    with tempfile.TemporaryDirectory() as folder:
        result = run_study(timed_config, splits, f"journal:{folder}/journal.log", "bench", None, on_trial=record)
    return Search(finished, result.best_params, _holdout(config, splits, result.best_params))


def peer(config: TrainingConfig, splits: Splits, budget: float, seed: int) -> Search:
    started = time.perf_counter()  # its preprocessing counts, as ours does inside run_study
    x_train, y_train = features_and_target(config, splits.train)
    x_valid, y_valid = features_and_target(config, splits.validation)
    prepare = preprocessor(config).fit(x_train)  # once, as our objective does
    matrix = np.vstack([prepare.transform(x_train), prepare.transform(x_valid)])
    target = pd.concat([y_train, y_valid], ignore_index=True)
    fold = PredefinedSplit(np.r_[np.full(len(x_train), -1), np.zeros(len(x_valid))])
    space = {name: distribution(dim) for name, dim in config.tuning.search_space.items()}
    sign = 1.0 if config.higher_is_better else -1.0
    metric = config.gate.metric

    def scorer(model: Any, features: np.ndarray, truth: pd.Series) -> float:
        scores = predict_scores(model, features, config.task)
        return sign * float(compute_metrics(config.task, truth, scores, model_classes(model))[metric])

    finished: list[tuple[float, float]] = []
    params: list[dict[str, Any]] = []
    block = 0
    with model_threads(len(x_train), config.model.threads):
        while time.perf_counter() - started < budget:
            block_started = time.perf_counter() - started
            search = RandomizedSearchCV(
                estimator(config, {}), space, n_iter=PEER_BLOCK, scoring=scorer, cv=fold,
                refit=False, n_jobs=1, random_state=seed * 1000 + block, error_score=np.nan,
            )  # fmt: skip
            search.fit(matrix, target)
            results = search.cv_results_
            spent = np.cumsum(results["mean_fit_time"] + results["mean_score_time"])
            for i, seconds in enumerate(spent):
                score = float(results["mean_test_score"][i])
                if block_started + seconds <= budget and np.isfinite(score):
                    finished.append((block_started + float(seconds), sign * score))
                    params.append(dict(results["params"][i]))
            block += 1
    if not finished:
        raise RuntimeError(f"{config.model_name}: no RandomizedSearchCV candidate finished in {budget:.0f} s")
    scores = [score for _, score in finished]
    best = params[int(np.argmax(scores) if config.higher_is_better else np.argmin(scores))]
    return Search(finished, best, _holdout(config, splits, best))


def duel(config_path: Path, budget: float, seed: int) -> Duel:
    config = load_config(config_path)
    frame = read_source(config, config.window)
    frame = frame[frame[config.target].notna()].reset_index(drop=True)
    splits = time_split(frame, config.timestamp, config.split)
    return Duel(
        config_path.name,
        seed,
        budget,
        ours(config, splits, budget, seed),
        peer(config, splits, budget, seed),
        config.higher_is_better,
    )


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f}"


def markdown(duels: list[Duel]) -> str:
    lines = [
        "## 2. Tuning efficiency: Optuna as configured against `RandomizedSearchCV`, same wall-time budget",
        "",
        "The config's space, model family, metric and splits; each search gets the same budget in seconds",
        "(ours: TPE and the median pruner with staged boosting; the peer: random candidates fitted in full,",
        "in blocks until the budget is spent, a candidate counting only if it finished inside it). Scores",
        "are the validation metric (each side's search) and the holdout metric of each side's best",
        "parameters fitted on train + validation. Time ratio: our time to reach the peer's final best",
        "validation score over the peer's own time to it (goal <= 0.5).",
        "",
        "| config | seed | budget s | candidates: ours / peer | best validation: ours / peer "
        "| holdout: ours / peer | to the peer's best, s: ours / peer | time ratio |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for d in duels:
        ratio = d.time_ratio
        lines.append(
            f"| {d.config} | {d.seed} | {d.budget:.0f} | {len(d.ours.finished)} / {len(d.peer.finished)} "
            f"| {d.ours.best(d.higher_is_better):.4f} / {d.peer_best:.4f} "
            f"| {d.ours.holdout:.4f} / {d.peer.holdout:.4f} "
            f"| {_seconds(d.ours.time_to(d.peer_best, d.higher_is_better))} "
            f"/ {_seconds(d.peer.time_to(d.peer_best, d.higher_is_better))} "
            f"| {'never' if ratio is None else f'{ratio:.2f}'} |"
        )
    ratios = [d.time_ratio for d in duels]
    reached = [r for r in ratios if r is not None]
    lines += [
        "",
        f"Median time ratio over the {len(reached)} duels where ours reached the peer's best: "
        + (f"{median(reached):.2f}" if reached else "none")
        + f"; ours never reached it in {len(ratios) - len(reached)} of {len(ratios)}.",
    ]
    return "\n".join(lines) + "\n"


def run(budgets: dict[Path, float], seeds: list[int]) -> str:
    logging.getLogger("tasks.tune").setLevel(logging.ERROR)  # "the cap stopped it": the budget is the point
    return markdown([duel(config, budget, seed) for config, budget in budgets.items() for seed in seeds])


if __name__ == "__main__":
    print(run({Path("configs/bikeshare.yaml"): 20}, seeds=[1]))
