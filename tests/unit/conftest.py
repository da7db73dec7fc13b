"""Factories shared by the unit tests: a small config per task type and a synthetic frame to match."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from tasks.settings import TaskType, TrainingConfig

GATE_METRIC: dict[str, str] = {"binary": "roc_auc", "multiclass": "f1_macro", "regression": "rmse"}
CLASSES = ["high", "low", "mid"]


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Nested dicts merge key by key; anything else replaces."""
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def config_dict(task: TaskType) -> dict[str, Any]:
    return {
        "name": "synthetic",
        "model_name": "synthetic-model",
        "task": task,
        "source": {"kind": "files", "path": "unused.csv"},
        "timestamp": "ts",
        "target": "y",
        "features": {"numeric": ["x1", "x2"], "categorical": ["c1"]},
        "leakage": ["after"],
        "window": {"start": "2024-01-01", "end": "2024-02-01"},
        "split": {"validation_days": 5, "holdout_days": 5},
        "slices": ["c1"],
        "model": {"params": {"max_bins": 63}},
        "tuning": {
            "n_trials": 4,
            "timeout_seconds": 600,  # never the binding budget in a test: trial counts must be exact
            "seed": 7,
            "iterations_per_step": 10,
            "pruner": {"n_startup_trials": 5, "n_warmup_steps": 1},
            "search_space": {
                "learning_rate": {"type": "float", "low": 0.05, "high": 0.5, "log": True},
                "max_leaf_nodes": {"type": "int", "low": 4, "high": 31},
                "max_iter": {"type": "int", "low": 10, "high": 30},
            },
        },
        "gate": {"metric": GATE_METRIC[task]},
    }


def synthetic_frame(task: TaskType, rows: int = 400, days: int = 30, seed: int = 0) -> pd.DataFrame:
    """Rows spread evenly over `days` UTC days; the target depends on x1 and c1, so a model can learn it."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range("2024-01-01", periods=rows, freq=pd.Timedelta(days=days) / rows, tz="UTC")
    x1 = rng.uniform(0, 10, rows)
    x2 = rng.normal(0, 1, rows)
    x2[rng.random(rows) < 0.1] = np.nan  # the trees must cope with missing numbers
    c1 = rng.choice(["a", "b", "c"], rows)
    signal = x1 + np.where(c1 == "a", 3.0, 0.0) + rng.normal(0, 1, rows)
    if task == "binary":
        y: Any = (signal > 6.5).astype("int64")
    elif task == "multiclass":
        y = np.select([signal < 4.5, signal < 8.5], ["low", "mid"], "high")
    else:
        y = 2.0 * signal
    return pd.DataFrame({"ts": ts, "x1": x1, "x2": x2, "c1": c1, "after": rng.random(rows), "y": y})


@pytest.fixture(autouse=True, scope="module")
def _one_openmp_thread():
    """Tiny fits are fastest on one thread, and spinning OpenMP workers crawl on a busy two-core box."""
    with threadpool_limits(limits=1, user_api="openmp"):
        yield


@pytest.fixture
def make_config() -> Callable[..., TrainingConfig]:
    """`make_config("binary", tuning={"n_trials": 2})`: the base config with nested overrides."""

    def make(task: TaskType, **overrides: Any) -> TrainingConfig:
        return TrainingConfig.model_validate(_merge(config_dict(task), overrides))

    return make


@pytest.fixture
def make_frame() -> Callable[..., pd.DataFrame]:
    return synthetic_frame
