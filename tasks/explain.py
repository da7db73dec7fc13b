"""Explain: which input columns the candidate relies on, and how its predictions move with them.

`explain_model` is pure (a fitted Pipeline and a holdout in, an `Explanation` out); the `explain`
task at the bottom publishes it to MLflow and Prefect.

Permutation importance is model-agnostic and is measured on the holdout, in the gate's own
metric, on the Pipeline's input columns (a categorical is one column, not its codes): it explains
what the gate judged, in the units the gate judged it. Partial dependence shows the direction of
the top features; SHAP is added only when the optional `shap` package happens to be installed.
"""

from __future__ import annotations

import importlib.util
import math
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from sklearn.inspection import partial_dependence, permutation_importance
from sklearn.metrics import log_loss, make_scorer

from tasks.artifacts import load_logged
from tasks.model import features_and_target, model_classes
from tasks.notify import artifact_key
from tasks.settings import METRIC_DIRECTIONS, TrainingConfig
from tasks.threads import model_threads
from tasks.train import Candidate

# sklearn scorers are all higher-is-better (losses negated), so "score before - score after
# shuffling" is positive for a feature the model relies on, whichever way the gate metric points.
SCORERS: dict[str, str] = {
    "roc_auc": "roc_auc",
    "average_precision": "average_precision",
    "brier": "neg_brier_score",
    "f1": "f1",
    "accuracy": "accuracy",
    "f1_macro": "f1_macro",
    "rmse": "neg_root_mean_squared_error",
    "mae": "neg_mean_absolute_error",
    "r2": "r2",
}
# On one class the roc_auc scorer returns NaN and average_precision a meaningless value, silently.
NEEDS_BOTH_CLASSES = {"roc_auc", "average_precision"}

PD_ROWS = 2000  # brute-force partial dependence predicts every row once per grid point
PD_MAX_CATEGORIES = 50  # the most frequent ones: a readable bar chart, a bounded cost
PD_PERCENTILES = (5.0, 95.0)  # a numeric grid spans these, so a few outliers do not stretch it
SHAP_ROWS = 1000  # exact tree SHAP costs far more per row than a prediction
TABLE_ROWS = 10  # features listed in the published summary


@dataclass(frozen=True)
class FeatureImportance:
    """Drop of the gate metric when the column is shuffled; larger always means more important."""

    feature: str
    mean: float
    std: float


@dataclass(frozen=True)
class PartialDependence:
    """Average prediction with one input column set to each grid value, the others as observed."""

    feature: str
    kind: str  # "numeric" | "categorical"
    grid: list[Any]
    # binary: P(positive); regression: the prediction; multiclass: one list per class, in `classes` order
    average: list[float] | list[list[float]]
    classes: list[Any] | None = None


@dataclass(frozen=True)
class Explanation:
    metric: str
    rows: int  # holdout rows used
    importances: list[FeatureImportance]  # every input feature, most important first
    partial_dependence: list[PartialDependence]  # for the top features
    shap: dict[str, float] | None  # mean |SHAP| per input feature (model output units)
    shap_note: str  # why there are no SHAP values, or how they were computed

    def top(self, n: int) -> list[FeatureImportance]:
        return self.importances[:n]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Explanation:
        return cls(
            metric=data["metric"],
            rows=int(data["rows"]),
            importances=[FeatureImportance(**item) for item in data["importances"]],
            partial_dependence=[PartialDependence(**item) for item in data["partial_dependence"]],
            shap=None if data["shap"] is None else {k: float(v) for k, v in data["shap"].items()},
            shap_note=data["shap_note"],
        )

    def markdown(self, title: str, top_n: int) -> str:
        lines = [
            f"# {title}",
            "",
            f"Permutation importance on {self.rows} holdout rows: how much `{self.metric}` worsens when the "
            "column is shuffled (mean ± std over shuffles; near 0 means the model does not rely on it).",
            "",
            "| rank | feature | importance |",
            "| --- | --- | --- |",
        ]
        lines += [
            f"| {rank} | `{item.feature}` | {item.mean:.4f} ± {item.std:.4f} |"
            for rank, item in enumerate(self.top(top_n), start=1)
        ]
        lines.append("")
        if self.shap is None:
            lines.append(f"**SHAP:** none ({self.shap_note}).")
        else:
            ranked = sorted(self.shap.items(), key=lambda kv: -kv[1])[:top_n]
            values = ", ".join(f"`{name}` {value:.4f}" for name, value in ranked)
            lines.append(f"**SHAP** (mean absolute SHAP value, {self.shap_note}): {values}.")
        lines.append("")
        names = ", ".join(f"`{pd_.feature}`" for pd_ in self.partial_dependence) or "none"
        lines.append(f"**Partial dependence** plotted for: {names}.")
        return "\n".join(lines) + "\n"


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value JSON can hold."""
    return value.item() if isinstance(value, np.generic) else value


def _sample(frame: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    return frame.sample(n=rows, random_state=seed) if len(frame) > rows else frame


def scorer_for(config: TrainingConfig, model: Any) -> Any:
    """The sklearn scorer that measures the gate's metric, higher is better."""
    metric = config.gate.metric
    if metric == "log_loss":
        # "neg_log_loss", but told every class the model knows (as tasks.model.compute_metrics is):
        # the bare scorer fails on a sample that lacks a class.
        return make_scorer(
            log_loss, greater_is_better=False, response_method="predict_proba", labels=model_classes(model)
        )
    if metric not in SCORERS:
        raise ValueError(f"no permutation-importance scorer for metric {metric!r}")
    return SCORERS[metric]


def permutation_importances(
    config: TrainingConfig, model: Any, features: pd.DataFrame, target: pd.Series
) -> list[FeatureImportance]:
    """Every input column's importance on this sample, most important first."""
    metric = config.gate.metric
    if config.task == "binary" and metric in NEEDS_BOTH_CLASSES and target.nunique() < 2:
        raise ValueError(
            f"cannot measure permutation importance on {metric}: the holdout sample has a single class "
            f"({sorted(target.unique().tolist())}), and {metric} needs both"
        )
    result = permutation_importance(
        model,
        features,
        target,
        scoring=scorer_for(config, model),
        n_repeats=config.explanations.n_repeats,
        random_state=config.tuning.seed,
        n_jobs=1,  # the trees already use the cores; processes would copy the model per feature
    )
    found = [
        FeatureImportance(feature=str(name), mean=float(mean), std=float(std))
        for name, mean, std in zip(features.columns, result.importances_mean, result.importances_std, strict=True)
    ]
    # Stable on ties (e.g. several unused columns at 0): they keep the config's order.
    return sorted(found, key=lambda item: -item.mean if math.isfinite(item.mean) else math.inf)


def numeric_grid(values: pd.Series, resolution: int) -> list[float]:
    """Grid over the observed numbers; NaN is skipped (sklearn would otherwise build a NaN grid)."""
    observed = values.to_numpy(dtype=float, na_value=np.nan)
    observed = observed[np.isfinite(observed)]
    if observed.size == 0:
        return []
    uniques = np.unique(observed)
    if uniques.size <= resolution:
        return [float(v) for v in uniques]
    low, high = np.percentile(observed, PD_PERCENTILES)
    if low == high:  # mostly one value (e.g. precipitation): span everything seen instead
        low, high = uniques[0], uniques[-1]
    return [float(v) for v in np.unique(np.linspace(low, high, resolution))]


def categorical_grid(values: pd.Series) -> list[Any]:
    """One grid point per category seen (the most frequent ones), sorted for a stable picture."""
    counts = values.dropna().value_counts()
    kept = counts.index[:PD_MAX_CATEGORIES]
    return sorted((_plain(v) for v in kept), key=str)


def partial_dependence_of(
    config: TrainingConfig, model: Any, features: pd.DataFrame, feature: str
) -> PartialDependence | None:
    """Partial dependence of one input column, or None when it has no observed value to vary."""
    categorical = feature in config.features.categorical
    grid = (
        categorical_grid(features[feature])
        if categorical
        else numeric_grid(features[feature], config.explanations.grid_resolution)
    )
    if not grid:
        return None
    # sklearn refuses integer columns for partial dependence (implicit rounding); the model reads floats anyway.
    frame = features.astype(dict.fromkeys(config.features.numeric, "float64"))
    result = partial_dependence(
        model,
        frame,
        [feature],
        categorical_features=config.features.categorical or None,
        custom_values={feature: grid},
        method="brute",  # "recursion" needs the bare trees, not the Pipeline and its raw columns
        kind="average",
    )
    average = np.asarray(result["average"], dtype=float)  # (outputs, grid points)
    classes = model_classes(model) if config.task == "multiclass" else None
    return PartialDependence(
        feature=feature,
        kind="categorical" if categorical else "numeric",
        grid=[_plain(v) for v in result["grid_values"][0]],
        average=[[float(v) for v in row] for row in average] if classes else [float(v) for v in average[0]],
        classes=None if classes is None else [_plain(c) for c in classes],
    )


def shap_summary(config: TrainingConfig, model: Any, features: pd.DataFrame) -> tuple[dict[str, float] | None, str]:
    """Mean |SHAP| per input column and a note; never a failure, since SHAP is optional."""
    if not config.explanations.shap:
        return None, "turned off in config (explanations.shap: false)"
    if importlib.util.find_spec("shap") is None:
        return None, "shap is not installed"
    rows = _sample(features, SHAP_ROWS, config.tuning.seed)
    try:
        return mean_abs_shap(model, rows, config.features.all), f"computed on {len(rows)} rows"
    except Exception as error:  # an optional extra must not fail the training run
        return None, f"not supported for this model: {type(error).__name__}: {error}"


def mean_abs_shap(model: Any, rows: pd.DataFrame, inputs: list[str]) -> dict[str, float]:
    """Tree SHAP on the fitted trees, then mapped back from the transformed columns to input columns."""
    import shap  # optional, and slow to import: only when asked for and installed

    prepare, final = model[:-1], model[-1]
    transformed = np.asarray(prepare.transform(rows), dtype=float)
    # The ColumnTransformer keeps one output column per input column, named after it.
    names = [str(name) for name in prepare.get_feature_names_out()]
    values = shap.TreeExplainer(final).shap_values(transformed)
    if isinstance(values, list):  # older shap: one array per class
        values = np.stack(values, axis=-1)
    magnitude = np.abs(np.asarray(values, dtype=float))
    per_column = magnitude.mean(axis=(0, 2)) if magnitude.ndim == 3 else magnitude.mean(axis=0)
    if len(per_column) != len(names):
        raise ValueError(f"{len(per_column)} SHAP columns for {len(names)} transformed columns")
    by_name = dict(zip(names, per_column, strict=True))
    return {name: float(by_name[name]) for name in inputs}


def explain_model(config: TrainingConfig, model: Any, holdout: pd.DataFrame) -> Explanation:
    """Permutation importance, partial dependence and (optionally) SHAP on a seeded holdout sample."""
    if holdout.empty:
        raise ValueError("cannot explain a model on an empty holdout")
    seed = config.tuning.seed
    features, target = features_and_target(config, _sample(holdout, config.explanations.sample_rows, seed))
    with model_threads(len(features), config.model.threads):
        importances = permutation_importances(config, model, features, target)
        pd_rows = _sample(features, PD_ROWS, seed)
        top = [item.feature for item in importances[: config.explanations.top_features]]
        dependence = [
            found for name in top if (found := partial_dependence_of(config, model, pd_rows, name)) is not None
        ]
        shap_values, shap_note = shap_summary(config, model, features)
    return Explanation(
        metric=config.gate.metric,
        rows=len(features),
        importances=importances,
        partial_dependence=dependence,
        shap=shap_values,
        shap_note=shap_note,
    )


def safe_name(name: str, allowed: str) -> str:
    return "".join(ch if ch.isalnum() or ch in allowed else "_" for ch in name)


def _series(item: PartialDependence) -> list[tuple[str | None, list[float]]]:
    """(label, values) per line to draw: one per class for multiclass, else one unlabelled."""
    if item.classes:
        rows = cast(list[list[float]], item.average)
        return [(str(label), row) for label, row in zip(item.classes, rows, strict=True)]
    return [(None, cast(list[float], item.average))]


def _response(metric: str, item: PartialDependence) -> str:
    if item.classes:
        return "average P(class)"
    return "average P(positive)" if metric in METRIC_DIRECTIONS["binary"] else "average prediction"


def plot_partial_dependence(explanation: Explanation, folder: Path) -> list[Path]:
    """One PNG per partial dependence: a line for a numeric column, bars for a categorical one."""
    # A bare Figure renders with Agg and is never registered with pyplot: no backend switch, nothing to close.
    from matplotlib.figure import Figure

    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for item in explanation.partial_dependence:
        series = _series(item)
        figure = Figure(figsize=(6.4, 4.0), layout="constrained")
        axes = figure.subplots()
        if item.kind == "categorical":
            positions = np.arange(len(item.grid))
            width = 0.8 / len(series)
            for index, (label, values) in enumerate(series):
                axes.bar(positions + index * width - 0.4 + width / 2, values, width=width, label=label)
            axes.set_xticks(positions, [str(v) for v in item.grid], rotation=90 if len(item.grid) > 8 else 0)
        else:
            for label, values in series:
                axes.plot(item.grid, values, marker="o", markersize=3, label=label)
        axes.set_xlabel(item.feature)
        axes.set_ylabel(_response(explanation.metric, item))
        axes.set_title(f"Partial dependence on {item.feature}")
        if item.classes:
            axes.legend(title="class")
        path = folder / f"pd_{safe_name(item.feature, '-_.')}.png"
        if path in paths:  # two names that differ only in unsafe characters
            path = path.with_name(f"{path.stem}_{len(paths)}.png")
        figure.savefig(path, dpi=100)
        paths.append(path)
    return paths


# --- the stage: explain the candidate, then show it in MLflow and Prefect ----------------------


@task(name="explain", cache_policy=NO_CACHE)
def explain(config: TrainingConfig, holdout: pd.DataFrame, candidate: Candidate) -> Explanation | None:
    """Explain the logged candidate on the holdout; the files go to its MLflow run, the summary to Prefect.

    A holdout the metric cannot be measured on (one class only) has no explanation: the reason is
    logged on the run instead, and the gate, which rejects such a holdout anyway, still reports.
    """
    run_tags = MlflowClient().get_run(candidate.run_id).data.tags
    model = load_logged(candidate.model_uri, run_tags, candidate.label)
    try:
        explanation = explain_model(config, model, holdout)
    except ValueError as error:
        get_run_logger().warning("no explanations for %s: %s", candidate.label, error)
        with mlflow.start_run(run_id=candidate.run_id):
            mlflow.log_text(f"no explanations: {error}\n", "explanations/unavailable.txt")
        return None
    title = f"Explanations: {candidate.label}"
    markdown = explanation.markdown(title, TABLE_ROWS)
    top = explanation.top(config.explanations.top_features)
    with mlflow.start_run(run_id=candidate.run_id):
        mlflow.log_dict(explanation.to_dict(), "explanations/explanation.json")
        mlflow.log_text(markdown, "explanations/summary.md")
        with tempfile.TemporaryDirectory() as tmp:
            for path in plot_partial_dependence(explanation, Path(tmp)):
                mlflow.log_artifact(str(path), artifact_path="explanations")
        mlflow.log_metrics(
            {f"importance_{safe_name(item.feature, '-_. /')}": item.mean for item in top if math.isfinite(item.mean)}
        )
    create_markdown_artifact(markdown, key=artifact_key("explanations", candidate.name), description=title)
    get_run_logger().info(
        "explanations on %d holdout rows, %s drop: %s; SHAP: %s",
        explanation.rows,
        explanation.metric,
        ", ".join(f"{item.feature} {item.mean:.4f}" for item in top),
        explanation.shap_note,
    )
    return explanation
