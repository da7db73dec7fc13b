"""The online service: `models:/<name>@champion` over HTTP, following the alias, logging what it answered.

    python -m flows.serve --config configs/flights.yaml        # make serve

| endpoint | answers |
| --- | --- |
| `POST /predict` | one record, a list, `{"records": [...]}`, or MLflow's `dataframe_records` / `dataframe_split` |
| `GET /health` | 200 once a model is loaded (and any refused new version's error); 503 before |
| `GET /model` | name, version, alias, run id, training-data digest, promoted at, loaded at |
| `GET /metrics` | Prometheus text: requests, errors, latency, rows, the served version, reloads, the log |

A bad request gets a 422 naming every field and rule (tasks/serve_request.py), never a 500. The
champion is followed by polling the registry (tasks/serve_model.py) and switched atomically; answered
rows reach the inference log in the background (tasks/serve_log.py), where monitoring reads them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from mlflow import MlflowClient
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as prometheus_multiprocess
from starlette.concurrency import run_in_threadpool

from tasks.score import scored_frame
from tasks.serve_log import Answered, OnlineLog, start_writer_process
from tasks.serve_model import ChampionFollower, ServedVersion
from tasks.serve_request import BadRequest, Problem, records_of, request_schema, validate_request
from tasks.settings import ConfigError, TrainingConfig, load_config
from tasks.stores import Stores

CONFIG_ENV = "DRIFTLOOP_SERVE_CONFIG"  # how uvicorn's worker processes learn the config
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


class Metrics:
    """The service's Prometheus metrics (per process; summed across workers in multiprocess mode)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("driftloop_requests", "Requests answered", ["endpoint", "status"], registry=r)
        self.errors = Counter(
            "driftloop_request_errors", "Requests refused or failed", ["endpoint", "reason"], registry=r
        )
        self.latency = Histogram(
            "driftloop_request_seconds", "Time to answer /predict", ["status"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.rows = Counter("driftloop_predicted_rows", "Rows predicted", registry=r)
        self.version = Gauge(
            "driftloop_model_version", "The served version (1 on its label)", ["model", "version"],
            registry=r, multiprocess_mode="liveall",
        )  # fmt: skip
        self.reloads = Counter("driftloop_model_reloads", "Switches to a new champion version", registry=r)
        self.load_failures = Gauge(
            "driftloop_model_load_failures", "New versions refused (failed to load or to answer)",
            registry=r, multiprocess_mode="liveall",
        )  # fmt: skip
        self.logged = Gauge(
            "driftloop_inference_log_rows", "Answered rows by state", ["state"], registry=r,
            multiprocess_mode="liveall",
        )  # fmt: skip

    def served(self, served: ServedVersion, previous: ServedVersion | None) -> None:
        if previous is not None:  # set to 0, not removed: multiprocess mode keeps a removed child's file
            self.version.labels(previous.name, previous.version).set(0)
            self.reloads.inc()
        self.version.labels(served.name, served.version).set(1)

    def exposition(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            combined = CollectorRegistry()
            prometheus_multiprocess.MultiProcessCollector(combined)
            return generate_latest(combined)
        return generate_latest(self.registry)


class Service:
    """What one process of the service holds: config, the followed champion, the log writer, metrics."""

    def __init__(self, config: TrainingConfig, stores: Stores, client: MlflowClient | None = None) -> None:
        self.config = config
        self.metrics = Metrics()
        client = client or MlflowClient(
            tracking_uri=stores.mlflow_tracking_uri, registry_uri=stores.mlflow_tracking_uri
        )
        self.follower = ChampionFollower(config, client, on_swap=self._swapped)
        self.online_log = OnlineLog(config, stores.data_uri)
        self._writer: ProcessPoolExecutor | None = None
        self._previous: ServedVersion | None = None
        self.schema = request_schema(config)

    def _swapped(self, served: ServedVersion) -> None:
        self.metrics.served(served, self._previous)
        self._previous = served

    def open_writer(self) -> None:
        """The inference log's writes in a process of their own, off this process's GIL (tasks/serve_log.py).

        Called from the main thread, where the writer can be started deaf to the stop signals.
        """
        self._writer = start_writer_process()
        self.online_log.executor = self._writer

    def start(self) -> None:
        self.online_log.start()
        self.follower.start()

    def stop(self) -> None:
        self.follower.stop()
        self.online_log.stop()  # the last flush and merge, through the writer process
        if self._writer is not None:
            self._writer.shutdown(wait=True)

    def predict(self, raw: bytes, request_id: str) -> tuple[int, dict[str, Any]]:
        """Status and body of one /predict call; runs in a worker thread (the model holds the GIL little)."""
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as error:
            return 422, refusal([Problem(None, f"malformed JSON: {error}")], request_id)
        try:
            rows = validate_request(self.config, records_of(body, self.config.serving.max_batch_rows), self.schema)
        except BadRequest as error:
            return 422, refusal(error.problems, request_id)
        served = self.follower.current  # read once: this request is answered wholly by this version
        if served is None:
            return 503, {"detail": self.follower.last_error or "no model loaded yet", "request_id": request_id}
        prediction, confidence, probabilities = scored_frame(served.model, rows, self.config)
        answered_at = datetime.now(UTC)
        self.online_log.add(
            Answered(
                body=raw,
                rows=len(rows),
                prediction=np.asarray(prediction),
                confidence=None if confidence is None else np.asarray(confidence),
                probabilities=None if probabilities is None else np.asarray(probabilities, dtype=object),
                model_name=served.name,
                model_version=served.version,
                request_id=request_id,
                answered_at=answered_at,
            )
        )
        self.metrics.rows.inc(len(rows))
        return 200, {
            "request_id": request_id,
            "model": {"name": served.name, "version": served.version},
            "predictions": answer_rows(prediction, confidence, probabilities),
        }

    def health(self) -> tuple[int, dict[str, Any]]:
        served, error = self.follower.current, self.follower.last_error
        body: dict[str, Any] = {"status": "ready" if served else "unavailable", "error": error}
        if served:
            body["model"] = {"name": served.name, "version": served.version}
        return (200 if served else 503), body

    def refresh_metrics(self) -> None:
        log = self.online_log
        self.metrics.load_failures.set(self.follower.failed_loads)
        for state, value in (
            ("written", log.written_rows),
            ("pending", log.pending_rows),
            ("dropped", log.dropped_rows),
        ):
            self.metrics.logged.labels(state).set(value)


def refusal(problems: list[Problem], request_id: str) -> dict[str, Any]:
    return {"detail": [p.as_dict() for p in problems], "request_id": request_id}


def answer_rows(prediction: Any, confidence: Any, probabilities: Any) -> list[Any]:
    """Binary: P(positive); regression: the value; multiclass: label, its probability and every class's."""
    if confidence is None:
        return [float(v) for v in prediction]
    return [
        {"label": label, "confidence": float(conf), "probabilities": json.loads(probs)}
        for label, conf, probs in zip(prediction, confidence, probabilities, strict=True)
    ]


def create_app(config: TrainingConfig, stores: Stores, client: MlflowClient | None = None) -> FastAPI:
    service = Service(config, stores, client)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.open_writer()
        await run_in_threadpool(service.start)  # the first load reads the registry: off the event loop
        yield
        await run_in_threadpool(service.stop)  # flushes the inference log

    app = FastAPI(title=f"driftloop: {config.model_name}", lifespan=lifespan)
    # Answering is CPU work under one GIL: a few threads at once keep both cores busy (the model releases
    # the GIL in parts); more interleave every request with every other and only lengthen the tail.
    answering = anyio.CapacityLimiter(config.serving.threads)
    app.state.service = service

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        started = time.perf_counter()
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        raw = await request.body()
        try:
            status, body = await anyio.to_thread.run_sync(service.predict, raw, request_id, limiter=answering)
        except Exception as error:  # a model that fails on valid rows: counted and said, the service stays up
            status, body = 500, {"detail": f"{type(error).__name__}: {error}", "request_id": request_id}
        metrics = service.metrics
        metrics.requests.labels("predict", str(status)).inc()
        metrics.latency.labels(str(status)).observe(time.perf_counter() - started)
        if status != 200:
            metrics.errors.labels("predict", {422: "invalid", 503: "no_model"}.get(status, "error")).inc()
        headers = {"x-request-id": request_id}
        if status == 200:
            headers["x-model-version"] = body["model"]["version"]
        return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)

    @app.get("/health")
    def health() -> JSONResponse:
        status, body = service.health()
        return JSONResponse(body, status_code=status)

    @app.get("/model")
    def model() -> JSONResponse:
        served = service.follower.current
        if served is None:
            return JSONResponse({"detail": service.follower.last_error or "no model loaded yet"}, status_code=503)
        return JSONResponse(served.describe())

    @app.get("/metrics")
    def metrics() -> Response:
        service.refresh_metrics()
        return Response(service.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return app


def app_from_env() -> FastAPI:
    """The app of one uvicorn worker process: the config named by DRIFTLOOP_SERVE_CONFIG."""
    # pandera's failure report concatenates frames in a way pandas 2.3 warns about, once per bad request
    warnings.filterwarnings("ignore", category=FutureWarning, module="pandera")
    return create_app(load_config(Path(os.environ[CONFIG_ENV])), Stores.from_env())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve the champion of a config's model over HTTP.")
    parser.add_argument("--config", default="configs/flights.yaml")
    parser.add_argument("--host", help="default: the config's serving.host (127.0.0.1)")
    parser.add_argument("--port", type=int, help="default: the config's serving.port")
    parser.add_argument("--workers", type=int, help="default: the config's serving.workers")
    args = parser.parse_args(argv)
    try:
        config = load_config(Path(args.config))
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    serving = config.serving
    workers = args.workers or serving.workers
    os.environ[CONFIG_ENV] = str(Path(args.config).resolve())
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # each worker is a process of its own: /metrics sums them through files in this folder
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="driftloop-metrics-")
    import uvicorn

    host, port = args.host or serving.host, args.port or serving.port
    print(
        f"serving models:/{config.model_name}@champion on http://{host}:{port} "
        f"(POST /predict; GET /health, /model, /metrics), {workers} worker(s); Ctrl-C stops",
        file=sys.stderr,
    )
    uvicorn.run(
        "flows.serve:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        access_log=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
