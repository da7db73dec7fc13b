"""Explanations: the feature the target is made of ranks first in the gate's metric, noise near 0.

Small real Pipelines on the synthetic frame (y is built from x1 and c1; x2 is pure noise with
missing values). No Prefect server and no MLflow: the stage runs through `.fn()` with MLflow's
logging functions replaced by recorders.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import sys
import types
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from prefect.logging import disable_run_logger

import tasks.explain as explain_module
from tasks.explain import (
    Explanation,
    FeatureImportance,
    PartialDependence,
    explain,
    explain_model,
    plot_partial_dependence,
)
from tasks.model import build_pipeline, features_and_target
from tasks.settings import METRIC_DIRECTIONS, TaskType, TrainingConfig
from tasks.train import Candidate
from tests.unit.conftest import config_dict, synthetic_frame

TASKS: list[TaskType] = ["binary", "multiclass", "regression"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def configure(task: TaskType, metric: str | None = None, **explanations: Any) -> TrainingConfig:
    """The shared synthetic config; fast explanations unless told otherwise."""
    data = config_dict(task)
    if metric is not None:
        data["gate"] = {"metric": metric}
    data["explanations"] = {"n_repeats": 3, "grid_resolution": 10, **explanations}
    return TrainingConfig.model_validate(data)


@pytest.fixture(scope="module")
def models() -> dict[str, Any]:
    """One fitted Pipeline per task type: the gate metric does not change what is fitted."""
    fitted: dict[str, Any] = {}
    for task in TASKS:
        config = configure(task)
        fitted[task] = build_pipeline(config, {"max_iter": 40}).fit(
            *features_and_target(config, synthetic_frame(task, rows=600, seed=1))
        )
    return fitted


def holdout(task: TaskType, rows: int = 400) -> pd.DataFrame:
    return synthetic_frame(task, rows=rows, seed=2)


def by_feature(explanation: Explanation) -> dict[str, FeatureImportance]:
    return {item.feature: item for item in explanation.importances}


def dependence(explanation: Explanation, feature: str) -> PartialDependence:
    return next(item for item in explanation.partial_dependence if item.feature == feature)


# --- permutation importance -------------------------------------------------------------------


@pytest.mark.parametrize(("task", "metric"), [(task, metric) for task in TASKS for metric in METRIC_DIRECTIONS[task]])
def test_the_signal_ranks_first_and_noise_is_near_zero_in_every_gate_metric(models, task, metric) -> None:
    explanation = explain_model(configure(task, metric), models[task], holdout(task))

    assert explanation.metric == metric
    assert explanation.importances[0].feature == "x1"
    found = by_feature(explanation)
    # Sign-normalised: losses (rmse, mae, log_loss, brier) grow when x1 is shuffled, and that counts as positive.
    assert found["x1"].mean > 0.05
    assert found["c1"].mean > 0  # the target is built from c1 too
    assert abs(found["x2"].mean) < 0.05 * found["x1"].mean  # pure noise
    if metric == "roc_auc":
        assert abs(found["x2"].mean) < 0.02  # in AUC points


@pytest.mark.parametrize("task", TASKS)
def test_every_input_feature_appears_once_most_important_first(models, task) -> None:
    config = configure(task)
    explanation = explain_model(config, models[task], holdout(task))

    names = [item.feature for item in explanation.importances]
    assert sorted(names) == sorted(config.features.all)
    assert len(names) == len(set(names))
    means = [item.mean for item in explanation.importances]
    assert means == sorted(means, reverse=True)
    assert all(item.std >= 0 for item in explanation.importances)
    assert explanation.top(2) == explanation.importances[:2]


def test_a_single_class_binary_holdout_cannot_be_scored_on_roc_auc(models) -> None:
    frame = holdout("binary")
    only_positives = frame[frame["y"] == 1]

    with pytest.raises(ValueError, match=r"roc_auc.*single class"):
        explain_model(configure("binary", "roc_auc"), models["binary"], only_positives)


def test_log_loss_is_measured_even_when_the_sample_lacks_a_class(models) -> None:
    frame = holdout("binary")
    only_positives = frame[frame["y"] == 1]

    explanation = explain_model(configure("binary", "log_loss"), models["binary"], only_positives)

    assert all(np.isfinite(item.mean) for item in explanation.importances)


def test_an_empty_holdout_is_refused(models) -> None:
    with pytest.raises(ValueError, match="empty holdout"):
        explain_model(configure("binary"), models["binary"], holdout("binary").head(0))


# --- sampling ---------------------------------------------------------------------------------


def test_the_sample_respects_sample_rows_and_is_the_same_every_time(models) -> None:
    config = configure("regression", sample_rows=150)

    first = explain_model(config, models["regression"], holdout("regression"))
    second = explain_model(config, models["regression"], holdout("regression"))

    assert first.rows == 150
    assert first == second


def test_another_seed_draws_another_sample(models) -> None:
    config = configure("regression", sample_rows=150)
    reseeded = config.model_copy(update={"tuning": config.tuning.model_copy(update={"seed": 8})})

    assert explain_model(config, models["regression"], holdout("regression")) != explain_model(
        reseeded, models["regression"], holdout("regression")
    )


def test_a_holdout_smaller_than_sample_rows_is_used_whole(models) -> None:
    explanation = explain_model(configure("binary", sample_rows=5000), models["binary"], holdout("binary", rows=300))

    assert explanation.rows == 300


# --- partial dependence -----------------------------------------------------------------------


@pytest.mark.parametrize("task", ["binary", "regression"])
def test_partial_dependence_rises_with_a_monotone_positive_feature(models, task) -> None:
    explanation = explain_model(configure(task), models[task], holdout(task))

    x1 = dependence(explanation, "x1")
    assert x1.kind == "numeric"
    assert x1.classes is None
    assert len(x1.grid) == len(x1.average) == 10  # grid_resolution
    assert x1.grid == sorted(x1.grid)
    assert x1.average[-1] > x1.average[0]  # type: ignore[operator]
    assert min(x1.grid) >= 0  # within what was observed
    assert max(x1.grid) <= 10


def test_partial_dependence_covers_the_top_features_only(models) -> None:
    explanation = explain_model(configure("binary", top_features=1), models["binary"], holdout("binary"))

    assert [item.feature for item in explanation.partial_dependence] == ["x1"]


def test_a_numeric_grid_skips_missing_values(models) -> None:
    frame = holdout("binary")
    assert frame["x2"].isna().any()

    explanation = explain_model(configure("binary", top_features=3), models["binary"], frame)

    x2 = dependence(explanation, "x2")
    assert len(x2.grid) == 10
    assert np.isfinite(x2.grid).all()
    assert np.isfinite(x2.average).all()


def test_a_categorical_has_one_grid_point_per_category_seen(models) -> None:
    frame = holdout("binary")

    explanation = explain_model(configure("binary", top_features=3), models["binary"], frame)
    two_categories = explain_model(configure("binary", top_features=3), models["binary"], frame[frame["c1"] != "c"])

    c1 = dependence(explanation, "c1")
    assert c1.kind == "categorical"
    assert c1.grid == ["a", "b", "c"]
    average = dict(zip(c1.grid, c1.average, strict=True))
    assert average["a"] > max(average["b"], average["c"])  # the target adds 3 for "a"
    assert dependence(two_categories, "c1").grid == ["a", "b"]


def test_integer_columns_get_a_partial_dependence_too() -> None:
    # sklearn refuses partial dependence on integer columns; the explanation must not.
    config = configure("regression", grid_resolution=20)
    frame = synthetic_frame("regression", rows=400, seed=1).assign(x1=lambda f: f["x1"].round().astype("int64"))
    model = build_pipeline(config, {"max_iter": 20}).fit(*features_and_target(config, frame))

    explanation = explain_model(config, model, frame)

    x1 = dependence(explanation, "x1")
    assert x1.grid == [float(v) for v in range(11)]  # fewer values than grid points: each value seen
    assert all(isinstance(v, float) for v in x1.grid)


def test_multiclass_partial_dependence_has_one_curve_per_class(models) -> None:
    explanation = explain_model(configure("multiclass"), models["multiclass"], holdout("multiclass"))

    x1 = dependence(explanation, "x1")
    assert x1.classes == ["high", "low", "mid"]
    average = np.asarray(x1.average)
    assert average.shape == (3, len(x1.grid))
    np.testing.assert_allclose(average.sum(axis=0), 1.0)
    high = x1.classes.index("high")
    assert average[high, -1] > average[high, 0]  # "high" needs a large signal


# --- the record: JSON and Markdown ------------------------------------------------------------


@pytest.mark.parametrize("task", TASKS)
def test_the_explanation_round_trips_through_strict_json(models, task) -> None:
    explanation = explain_model(configure(task), models[task], holdout(task))

    text = json.dumps(explanation.to_dict(), allow_nan=False)

    assert Explanation.from_dict(json.loads(text)) == explanation


def test_the_markdown_lists_the_top_features_shap_and_the_plots(models) -> None:
    explanation = explain_model(configure("binary", top_features=2), models["binary"], holdout("binary"))

    text = explanation.markdown("Explanations: m run 1234", top_n=2)

    assert text.startswith("# Explanations: m run 1234\n")
    rows = [line for line in text.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == 2
    assert rows[0].startswith("| 1 | `x1` | ")
    assert " ± " in rows[0]
    assert "roc_auc" in text
    assert "shap is not installed" in text
    assert "`x1`, `c1`" in text.splitlines()[-1]


# --- SHAP, optional ---------------------------------------------------------------------------


def test_shap_is_skipped_with_a_note_when_not_installed(models, monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "shap" else real(name, *a))

    explanation = explain_model(configure("binary"), models["binary"], holdout("binary"))

    assert explanation.shap is None
    assert explanation.shap_note == "shap is not installed"


def test_shap_is_skipped_with_a_note_when_turned_off(models, monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*_: Any) -> None:
        raise AssertionError("shap looked up although turned off")

    monkeypatch.setattr(importlib.util, "find_spec", never)

    explanation = explain_model(configure("binary", shap=False), models["binary"], holdout("binary"))

    assert explanation.shap is None
    assert "turned off" in explanation.shap_note


@contextmanager
def fake_shap(monkeypatch: pytest.MonkeyPatch, explainer: type) -> Any:
    module = types.ModuleType("shap")
    module.__spec__ = importlib.machinery.ModuleSpec("shap", None)
    module.TreeExplainer = explainer  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "shap", module)
    yield


class ColumnNumberExplainer:
    """SHAP value = (transformed column number + 1) with alternating signs; checks the mapping back."""

    classes: int | None = None

    def __init__(self, model: Any) -> None:
        self.model = model

    def shap_values(self, data: np.ndarray) -> Any:
        assert data.dtype == float  # transformed features, categories already coded
        signs = np.where(np.arange(len(data)) % 2 == 0, 1.0, -1.0)[:, None]
        values = signs * (np.arange(data.shape[1]) + 1.0)
        return values if self.classes is None else [values] * self.classes


@pytest.mark.parametrize("classes", [None, 3])
def test_shap_values_map_back_to_input_columns(models, monkeypatch: pytest.MonkeyPatch, classes) -> None:
    explainer = type("Explainer", (ColumnNumberExplainer,), {"classes": classes})
    with fake_shap(monkeypatch, explainer):
        explanation = explain_model(configure("binary"), models["binary"], holdout("binary"))

    # Transformed order is numeric then categorical: x1, x2, c1.
    assert explanation.shap == {"x1": 1.0, "x2": 2.0, "c1": 3.0}
    assert explanation.shap_note == "computed on 400 rows"


def test_shap_failure_is_a_note_not_an_error(models, monkeypatch: pytest.MonkeyPatch) -> None:
    class Unsupported:
        def __init__(self, model: Any) -> None:
            raise RuntimeError("model type not yet supported by TreeExplainer")

    with fake_shap(monkeypatch, Unsupported):
        explanation = explain_model(configure("binary"), models["binary"], holdout("binary"))

    assert explanation.shap is None
    assert explanation.shap_note == (
        "not supported for this model: RuntimeError: model type not yet supported by TreeExplainer"
    )


# --- plots ------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_one_png_per_partial_dependence(models, task, tmp_path: Path) -> None:
    explanation = explain_model(configure(task), models[task], holdout(task))

    paths = plot_partial_dependence(explanation, tmp_path / "plots")

    assert [p.name for p in paths] == [f"pd_{item.feature}.png" for item in explanation.partial_dependence]
    for path in paths:
        content = path.read_bytes()
        assert content.startswith(PNG_MAGIC)
        assert len(content) > 1000


def test_plot_file_names_are_safe(tmp_path: Path) -> None:
    explanation = Explanation(
        metric="rmse",
        rows=10,
        importances=[],
        partial_dependence=[
            PartialDependence("dep/time", "numeric", [0.0, 1.0], [1.0, 2.0]),
            PartialDependence("dep time", "categorical", ["a", "b"], [1.0, 2.0]),
        ],
        shap=None,
        shap_note="",
    )

    paths = plot_partial_dependence(explanation, tmp_path)

    assert [p.parent for p in paths] == [tmp_path, tmp_path]
    assert paths[0].name == "pd_dep_time.png"
    assert len(set(paths)) == 2  # the second sanitises to the same name and must not overwrite the first
    assert all(p.read_bytes().startswith(PNG_MAGIC) for p in paths)


# --- the stage: what reaches MLflow and Prefect -----------------------------------------------


def test_the_stage_logs_the_explanation_to_the_candidate_run(models, monkeypatch: pytest.MonkeyPatch) -> None:
    logged: dict[str, Any] = {"artifacts": {}, "runs": []}

    @contextmanager
    def start_run(run_id: str) -> Any:
        logged["runs"].append(run_id)
        yield

    class Client:
        def get_run(self, run_id: str) -> Any:
            return types.SimpleNamespace(data=types.SimpleNamespace(tags={"run": run_id}))

    def load_logged(uri: str, tags: dict[str, str], what: str) -> Any:
        assert (uri, tags) == ("models:/m-1", {"run": "run-1234567890"})
        return models["binary"]

    def log_artifact(path: str, artifact_path: str) -> None:
        logged["artifacts"][f"{artifact_path}/{Path(path).name}"] = Path(path).read_bytes()

    mlflow = explain_module.mlflow
    monkeypatch.setattr(explain_module, "MlflowClient", Client)
    monkeypatch.setattr(explain_module, "load_logged", load_logged)
    monkeypatch.setattr(mlflow, "start_run", start_run)
    monkeypatch.setattr(mlflow, "log_dict", lambda data, path: logged.update({path: data}))
    monkeypatch.setattr(mlflow, "log_text", lambda text, path: logged.update({path: text}))
    monkeypatch.setattr(mlflow, "log_artifact", log_artifact)
    monkeypatch.setattr(mlflow, "log_metrics", lambda metrics: logged.update(metrics=metrics))
    monkeypatch.setattr(
        explain_module, "create_markdown_artifact", lambda markdown, key, description: logged.update(prefect=key)
    )
    candidate = Candidate(
        name="synthetic-model",
        run_id="run-1234567890",
        model_uri="models:/m-1",
        params={},
        idempotency_key="k",
        version_tags={},
    )
    config = configure("binary", top_features=2)

    with disable_run_logger():
        explanation = explain.fn(config=config, holdout=holdout("binary"), candidate=candidate)

    assert logged["runs"] == ["run-1234567890"]
    assert Explanation.from_dict(logged["explanations/explanation.json"]) == explanation
    assert logged["explanations/summary.md"].startswith("# Explanations: synthetic-model run run-1234")
    assert sorted(logged["artifacts"]) == ["explanations/pd_c1.png", "explanations/pd_x1.png"]
    assert all(content.startswith(PNG_MAGIC) for content in logged["artifacts"].values())
    assert logged["metrics"] == {f"importance_{item.feature}": item.mean for item in explanation.top(2)}
    assert logged["prefect"] == "explanations-synthetic-model"
