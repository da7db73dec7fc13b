"""Train: fit the final Pipeline on train + validation and log it to MLflow with its lineage.

One MLflow run per training flow run holds everything a reviewer needs: the config, the data
digests (`mlflow.log_input`), the git revision, the Optuna study, why the run happened, the
model with signature and input example, and a reference sample of the training data for drift
monitoring. The SHA-256 of every model file is recorded on the run (tasks/artifacts.py), so what
is evaluated and later served is provably what was trained.

The model is not registered here: a version is created by the promotion step, under its lock,
together with its decision, so no version ever exists without one (tasks/promote.py).
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import sklearn
import yaml
from mlflow import MlflowClient
from mlflow.data.pandas_dataset import from_pandas
from mlflow.models import infer_signature
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.artifacts import SKOPS_TRUSTED_TYPES, TAG_MODEL_SHA256, hash_tags
from tasks.drift_null import NULL_ARTIFACT, calibrate
from tasks.faults import AFTER_LOG_MODEL, failpoint
from tasks.inference_log import CONFIDENCE, PREDICTION
from tasks.ingest import LandedBatch
from tasks.lineage import RunContext
from tasks.model import features_and_target, fit_pipeline, metric_value, model_classes, predict_scores
from tasks.registry import TAG_BEST_PARAMS, TAG_FITTED_UNTIL, TAG_FLOW_RUN, TAG_IDEMPOTENCY_KEY
from tasks.score import score_frame
from tasks.services import retry_lost_race
from tasks.settings import TimeWindow, TrainingConfig
from tasks.split import Splits
from tasks.stores import DataStore, Stores
from tasks.tune import TuningResult

REFERENCE_ROWS = 50_000


@dataclass(frozen=True)
class Candidate:
    """A trained, logged, not yet registered model; the promotion step registers it."""

    name: str
    run_id: str
    model_uri: str  # the logged model (models:/m-...), not a registered version
    params: dict[str, Any]
    idempotency_key: str
    version_tags: dict[str, str]  # lineage to record on the version when it is registered

    @property
    def label(self) -> str:
        return f"{self.name} run {self.run_id[:8]}"


def final_params(config: TrainingConfig, tuning: TuningResult) -> dict[str, Any]:
    return {**config.model.params, **tuning.best_params}


def model_requirements() -> list[str]:
    """Explicit pins: MLflow's inference spawns a subprocess and costs seconds per model."""
    return [
        f"mlflow=={mlflow.__version__}",
        f"scikit-learn=={sklearn.__version__}",
        f"pandas=={pd.__version__}",
        f"numpy=={np.__version__}",
    ]


def _flat_params(prefix: str, values: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}.{key}": value for key, value in values.items()}


@task(cache_policy=NO_CACHE)
def train(
    config: TrainingConfig,
    splits: Splits,
    tuning: TuningResult,
    batches: list[LandedBatch],
    context: RunContext,
    stores: Stores,
) -> Candidate:
    logger = get_run_logger()
    fit_frame = pd.concat([splits.train, splits.validation], ignore_index=True)
    features, target = features_and_target(config, fit_frame)
    params = final_params(config, tuning)
    cpu_started = time.process_time()
    pipeline = fit_pipeline(config, params, features, target)
    fit_cpu = round(time.process_time() - cpu_started, 2)
    store = DataStore(stores.data_uri)
    processed = store.processed_path(config.name, batches[0].path)  # validation moved them there
    source = store.uri(processed if len(batches) == 1 else processed.rsplit("/", 1)[0])
    batch_digests = ",".join(b.digest for b in batches)

    run_tags = {
        # set when the run is created, so a run killed at any point can be found by its flow run
        TAG_FLOW_RUN: context.flow_run_id or "",
        TAG_IDEMPOTENCY_KEY: context.idempotency_key,
        "driftloop.model_name": config.model_name,
        "driftloop.reason": context.reason,
        "driftloop.git_revision": context.git_revision,
        "driftloop.config_sha256": context.config_sha256,
        "driftloop.dataset": config.name,
        "driftloop.window": context.window.label(),
        "driftloop.batch_sha256": batch_digests,
        "driftloop.optuna_study": tuning.study_name,
        "mlflow.source.git.commit": context.git_revision.removesuffix("-dirty"),
    }
    with mlflow.start_run(run_name=f"{config.model_name} {context.window.label()}", tags=run_tags) as run:
        mlflow.log_params(
            {
                "task": config.task,
                "metric": config.gate.metric,
                "window": context.window.label(),
                **splits.describe(),
                "tuning.n_trials_budget": config.tuning.n_trials,
                "tuning.timeout_seconds": config.tuning.timeout_seconds,
                "tuning.stopped_by": tuning.stopped_by,  # "timeout": the cap, not the budget, decided
                "tuning.seed": config.tuning.seed,
                **_flat_params("model", params),
            }
        )
        for frame, context_name in ((fit_frame, "training"), (splits.holdout, "holdout")):
            with warnings.catch_warnings():  # MLflow registers two equivalent sources for file:// URIs
                warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
                dataset = from_pandas(frame, source=source, targets=config.target, name=f"{config.name}-{context_name}")
            # two runs on the same data may insert its dataset row at once: the loser links to the winner's
            retry_lost_race(lambda: mlflow.log_input(dataset, context=context_name))  # noqa: B023 (called at once)
        mlflow.log_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), "config/training.yaml")
        mlflow.log_dict(tuning.summary(), "tuning/study.json")
        mlflow.log_table(pd.DataFrame(tuning.trials), "tuning/trials.json")
        mlflow.log_metrics(
            {
                f"tuning_best_{config.gate.metric}": tuning.best_value,
                "tuning_trials": tuning.n_trials,
                "tuning_pruned": tuning.n_pruned,
                "tuning_seconds": tuning.seconds,
                # what this candidate cost, comparable across runs and with the replay's baselines
                "tuning_cpu_seconds": tuning.cpu_seconds,
                "fit_cpu_seconds": fit_cpu,
                "training_cpu_seconds": round(tuning.cpu_seconds + fit_cpu, 2),
            }
        )
        reference = reference_sample(config, pipeline, fit_frame, splits.holdout)
        _log_frame(reference, "reference/reference.parquet")
        mlflow.log_dict(calibrate(reference, config).to_dict(), NULL_ARTIFACT)  # drift thresholds from its noise

        info = log_pipeline(config, pipeline, features, "model")
        hashes = hash_tags(info.model_uri)  # read back from the store: what was really written
        mlflow.set_tags(hashes)
        failpoint(AFTER_LOG_MODEL)
    logger.info(
        "logged %s model %s (run %s, files hashed: %s)",
        config.model_name,
        info.model_id,
        run.info.run_id,
        hashes[TAG_MODEL_SHA256][:12],
    )
    return Candidate(
        name=config.model_name,
        run_id=run.info.run_id,
        model_uri=info.model_uri,
        params=params,
        idempotency_key=context.idempotency_key,
        version_tags={
            **hashes,
            TAG_IDEMPOTENCY_KEY: context.idempotency_key,
            TAG_BEST_PARAMS: json.dumps(tuning.best_params, sort_keys=True),
            "driftloop.run_id": run.info.run_id,
            "driftloop.reason": context.reason,
            "driftloop.window": context.window.label(),
            "driftloop.batch_sha256": batch_digests,
            "driftloop.git_revision": context.git_revision,
        },
    )


def log_pipeline(config: TrainingConfig, pipeline: Any, features: pd.DataFrame, name: str) -> Any:
    """Log a fitted Pipeline to the active run: skops (no pickle), signature, example, pinned requirements."""
    example = features.head(5)
    return mlflow.sklearn.log_model(
        pipeline,
        name=name,
        signature=infer_signature(example, predict_scores(pipeline, example, config.task)),
        input_example=example,
        pip_requirements=model_requirements(),
        serialization_format="skops",
        skops_trusted_types=SKOPS_TRUSTED_TYPES,
        pyfunc_predict_fn="predict" if config.task == "regression" else "predict_proba",
    )


@task(cache_policy=NO_CACHE)
def refit(config: TrainingConfig, splits: Splits, candidate: Candidate, passed: bool, window: TimeWindow) -> Candidate:
    """What is served after a pass (`gate.refit_after_pass`): the judged parameters fitted on the whole window.

    The judged model never saw its holdout, the freshest labelled rows; this refit has. It is logged
    in the same run beside the judged model, hashed like it, and its version records that it was
    fitted to the window's end (`driftloop.fitted_until`), so no later comparison scores it on rows
    it saw. The gate's numbers on the version are the judged model's. Off, or after a rejection, the
    candidate is returned unchanged.

    One guard, since nothing judges the refit out of sample: on the holdout, which it was fitted
    on, it must score at least as well as the judged model did without seeing it. A refit that
    cannot (a fit that broke, a holdout whose rows contradict the rest) is logged but not served:
    the judged model is.
    """
    if not (config.gate.refit_after_pass and passed):
        return candidate
    whole = pd.concat([splits.train, splits.validation, splits.holdout], ignore_index=True)
    features, target = features_and_target(config, whole)
    cpu_started = time.process_time()
    pipeline = fit_pipeline(config, candidate.params, features, target)
    fit_cpu = round(time.process_time() - cpu_started, 2)
    judged = MlflowClient().get_run(candidate.run_id).data.metrics.get(f"holdout_{config.gate.metric}", np.nan)
    seen = holdout_metric(config, pipeline, splits.holdout)
    if not refit_may_serve(seen, judged, config.higher_is_better):
        get_run_logger().warning(
            "refit of %s not served: %s %.4f on the holdout it was fitted on, the judged model %.4f without it",
            candidate.label,
            config.gate.metric,
            seen,
            judged,
        )
        with mlflow.start_run(run_id=candidate.run_id):
            mlflow.set_tag("driftloop.refit_refused", f"{config.gate.metric} {seen:.4f} seen, judged {judged:.4f}")
        return candidate
    with mlflow.start_run(run_id=candidate.run_id):
        info = log_pipeline(config, pipeline, features, "model-refit")
        hashes = hash_tags(info.model_uri)
        metrics = MlflowClient().get_run(candidate.run_id).data.metrics
        mlflow.log_metrics(
            {"refit_cpu_seconds": fit_cpu, "training_cpu_seconds": metrics.get("training_cpu_seconds", 0.0) + fit_cpu}
        )
        mlflow.set_tags({"driftloop.refit_model_sha256": hashes[TAG_MODEL_SHA256], "driftloop.refit_rows": len(whole)})
    get_run_logger().info("refitted %s on the whole window %s: %d rows", candidate.label, window.label(), len(whole))
    fitted_until = pd.Timestamp(window.end, tz="UTC").isoformat()
    return dataclasses.replace(
        candidate,
        model_uri=info.model_uri,
        version_tags={
            **candidate.version_tags,
            **hashes,
            TAG_FITTED_UNTIL: fitted_until,
            "driftloop.refit": "whole window",
        },
    )


def reference_sample(
    config: TrainingConfig, pipeline: Any, fit_frame: pd.DataFrame, holdout: pd.DataFrame
) -> pd.DataFrame:
    """What monitoring compares production with: the training window's rows, predictions out of sample.

    Features come from the whole window (fit and holdout rows, sampled at one rate so the mix stays
    the window's). Predictions are made on the holdout rows only, which this model was not fitted
    on: a boosted model's in-sample scores are sharper than anything production will see, so a
    reference of them makes prediction drift read high with no drift at all. Fit rows carry no
    prediction (NaN), and the drift distance ignores missing values.
    """
    rate = min(1.0, REFERENCE_ROWS / max(1, len(fit_frame) + len(holdout)))
    fit_rows = fit_frame.sample(frac=rate, random_state=config.tuning.seed)
    holdout_rows = holdout.sample(frac=rate, random_state=config.tuning.seed)
    prediction, confidence = score_frame(pipeline, holdout_rows, config)
    holdout_rows = holdout_rows.assign(**{PREDICTION: prediction})
    if confidence is not None:
        holdout_rows[CONFIDENCE] = confidence
    sample = pd.concat([fit_rows, holdout_rows], ignore_index=True)
    return sample.sort_values(config.timestamp, kind="stable").reset_index(drop=True)


def refit_may_serve(seen: float, judged: float, higher_is_better: bool) -> bool:
    """The refit's metric on the holdout it saw is finite and no worse than the judged model's without it."""
    if not np.isfinite(seen):
        return False
    sign = 1.0 if higher_is_better else -1.0
    return not np.isfinite(judged) or sign * (seen - judged) >= 0


def holdout_metric(config: TrainingConfig, pipeline: Any, holdout: pd.DataFrame) -> float:
    """The gate's metric of `pipeline` on the holdout rows; NaN where it cannot be computed."""
    features, target = features_and_target(config, holdout)
    scores = predict_scores(pipeline, features, config.task)
    return metric_value(config.task, config.gate.metric, target.to_numpy(), scores, model_classes(pipeline))


def _log_frame(frame: pd.DataFrame, artifact_path: str) -> None:
    """Log a dataframe as a Parquet artifact (MLflow has no direct call for Parquet)."""
    folder, name = artifact_path.rsplit("/", 1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        frame.to_parquet(path, index=False)
        mlflow.log_artifact(str(path), artifact_path=folder)
