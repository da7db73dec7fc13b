"""Serving under load: our service against `mlflow models serve`, the same champion, driven by locust.

One real champion of the flights config (its pipeline fitted on two weeks of the bundled data,
logged, hashed and registered as training does) in a throwaway DRIFTLOOP_HOME, served side by side
on loopback by (a) `python -m flows.serve` (validation of every request and the inference log
always on) and (b) `mlflow models serve -m models:/<name>/<version> --env-manager local`, the peer,
from the same SQLite store. Before anything is timed the peer must answer held-out records with our
probabilities (its pyfunc predict is predict_proba: column 1 against ours, to 1e-9). Each is then
driven by `locust --headless` (bench/locustfile_serving.py, its own process, users posting back to
back) with bodies of held-out rows in MLflow's `dataframe_records` shape: ours gets the whole
record (timestamp and row key too, which it logs), the peer the features. Single records at
several concurrencies, then batches; the sides alternate and each measurement is repeated.
Latency is locust's per request (unrounded), over the run after a warm-up; failures are
locust's. Last, a promotion under load: a second version is registered and the alias moved
while locust drives our service; every answer names its version (`x-model-version`).

    python -m bench.serving            # print the section
    python -m bench.serving --write    # ... and put it into BENCHMARKS.md (section 9)
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import yaml

from bench.timing import REPO_ROOT, machine, median
from flows.local_stack import free_port
from tasks.inference_log import MODEL_VERSION, PART, SCORED_AT
from tasks.settings import TimeWindow, TrainingConfig, load_config

CONFIG = REPO_ROOT / "configs" / "flights.yaml"
TRAIN = TimeWindow(start=datetime(2013, 1, 1, tzinfo=UTC), end=datetime(2013, 1, 15, tzinfo=UTC))
HELD_OUT = TimeWindow(start=datetime(2013, 1, 15, tzinfo=UTC), end=datetime(2013, 1, 22, tzinfo=UTC))
SECOND_PARAMS = {"max_iter": 60, "learning_rate": 0.2}  # the version promoted under load
SINGLE_USERS = (1, 4, 16)
BATCH_ROWS = 100
BATCH_USERS = (1, 4)
WORKERS = (1, 2)
TWO_WORKER_SCENARIOS = {("single", 16), ("batch", 4)}  # at 2 workers only the loads that could use them
SECONDS = 10  # per locust run
WARMUP_SECONDS = 2.0  # of each run, not counted in latency and throughput
PROMOTION_USERS = 8
PROMOTION_SECONDS = 30
PROMOTE_AFTER = 12.0  # seconds into the promotion run
POLL_SECONDS = 1.0  # serving.poll_seconds: how soon a moved alias is seen
AGREEMENT = 1e-9
SECTION = "## 9. Serving under load"
LOCUSTFILE = REPO_ROOT / "bench" / "locustfile_serving.py"


# --- the champion ---------------------------------------------------------------------------


@dataclass
class Home:
    """A throwaway DRIFTLOOP_HOME holding the registered model, and the rows around it."""

    folder: Path
    config: TrainingConfig
    stores: Any  # tasks.stores.Stores
    client: Any  # mlflow.MlflowClient
    train: pd.DataFrame
    held_out: pd.DataFrame

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "DRIFTLOOP_HOME": str(self.stores.home),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",  # the peer runs `uvicorn`
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
            "PYTHONUNBUFFERED": "1",
            **extra,
        }


@dataclass(frozen=True)
class Logged:
    model_uri: str
    run_id: str
    tags: dict[str, str]


def _utc(moment: date) -> pd.Timestamp:
    stamp = pd.Timestamp(moment)
    return stamp.tz_localize(UTC) if stamp.tzinfo is None else stamp.tz_convert(UTC)


def make_home(folder: Path) -> Home:
    """Validated rows of the train and held-out windows, a registered model, no version yet."""
    from mlflow import MlflowClient

    from tasks.ingest import load_bundled
    from tasks.registry import configure_mlflow
    from tasks.stores import Stores
    from tasks.validate import check_frame

    config = load_config(CONFIG)
    stores = Stores.from_env({"DRIFTLOOP_HOME": str(folder / "home")})
    stores.ensure_local_dirs()
    raw = load_bundled(config, TimeWindow(start=TRAIN.start, end=HELD_OUT.end))
    rows, failures = check_frame(config, raw, "bench-serving")
    if failures:
        raise RuntimeError(f"the bundled rows failed validation: {failures}")
    stamp = rows[config.timestamp]
    train = rows[stamp < _utc(TRAIN.end)].reset_index(drop=True)
    held_out = rows[stamp >= _utc(HELD_OUT.start)].reset_index(drop=True)
    client = MlflowClient(tracking_uri=stores.mlflow_tracking_uri, registry_uri=stores.mlflow_tracking_uri)
    configure_mlflow(stores, experiment=config.model_name)
    client.create_registered_model(config.model_name)
    return Home(folder, config, stores, client, train, held_out)


def log_version(home: Home, params: dict[str, Any]) -> Logged:
    """Fit the config's pipeline on the train rows and log it as training does (skops, hashes on the run)."""
    import mlflow

    from tasks.artifacts import hash_tags
    from tasks.model import features_and_target, fit_pipeline
    from tasks.train import log_pipeline

    config = home.config
    x, y = features_and_target(config, home.train)
    pipeline = fit_pipeline(config, {**config.model.params, **params}, x, y)
    with mlflow.start_run() as run:
        info = log_pipeline(config, pipeline, x, "model")
        tags = hash_tags(info.model_uri)
        mlflow.set_tags(tags)
    return Logged(info.model_uri, run.info.run_id, tags)


def register(home: Home, logged: Logged) -> str:
    """Register a logged model as the next version and move the champion alias to it."""
    from tasks.registry import CHAMPION, TAG_DECIDED_AT

    name = home.config.model_name
    version = home.client.create_model_version(
        name, logged.model_uri, run_id=logged.run_id,
        tags={**logged.tags, TAG_DECIDED_AT: datetime.now(UTC).isoformat()},
    )  # fmt: skip
    home.client.set_registered_model_alias(name, CHAMPION, version.version)
    return str(version.version)


# --- requests -------------------------------------------------------------------------------


def _json_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Records as a client sends them: ISO timestamps, nulls, whole numbers of integer columns as ints."""
    out = frame.copy()
    for column in out.columns:
        if isinstance(out[column].dtype, pd.DatetimeTZDtype):
            out[column] = out[column].map(lambda t: t.isoformat())
    return list(out.astype(object).where(out.notna(), None).to_dict(orient="records"))


def ours_records(config: TrainingConfig, rows: pd.DataFrame) -> list[dict[str, Any]]:
    """What our service takes: timestamp, row key and the features the config does not derive itself."""
    from tasks.derive import inputs_of

    derived = {d.name for d in config.derive if d.name not in inputs_of(d)}  # a repair keeps its column
    columns = dict.fromkeys([config.timestamp, *config.validation.unique_key, *config.features.all])
    return _json_records(rows[[c for c in columns if c not in derived or c == config.timestamp]])


def peer_records(config: TrainingConfig, rows: pd.DataFrame) -> list[dict[str, Any]]:
    """What the peer takes: the model's inputs, the features."""
    return _json_records(rows[config.features.all])


def bodies(records: list[dict[str, Any]], rows: int) -> list[str]:
    """Request bodies of `rows` records each, in MLflow's dataframe_records shape (both sides take it)."""
    return [json.dumps({"dataframe_records": records[i : i + rows]}) for i in range(0, len(records) - rows + 1, rows)]


# --- the two services -----------------------------------------------------------------------


@dataclass
class Server:
    name: str
    url: str
    path: str  # where predictions are asked for
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        """SIGTERM to its process group (uvicorn's workers with it), graceful: ours flushes its log."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def _start(name: str, command: list[str], env: dict[str, str], port: int, path: str, ready: str, log: Path) -> Server:
    with log.open("ab") as out:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = Server(name, f"http://127.0.0.1:{port}", path, process, log)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}: {log.read_text()[-3000:]}")
        try:
            if httpx.get(server.url + ready, timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    server.stop()
    raise RuntimeError(f"{name} was not ready within 180 s: {log.read_text()[-3000:]}")


def serving_config(folder: Path, workers: int) -> Path:
    """A copy of the flights config with a serving section (log flushes at their defaults)."""
    raw = yaml.safe_load(CONFIG.read_text())
    raw["serving"] = {"workers": workers, "poll_seconds": POLL_SECONDS}
    path = folder / f"flights-serving-{workers}w.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def start_ours(home: Home, workers: int, log: Path) -> Server:
    port = free_port()
    command = [sys.executable, "-m", "flows.serve", "--config", str(serving_config(home.folder, workers))]
    return _start("ours", [*command, "--port", str(port)], home.env(), port, "/predict", "/health", log)


def start_peer(home: Home, version: str, workers: int, log: Path) -> Server:
    port = free_port()
    command = [
        str(Path(sys.executable).with_name("mlflow")), "models", "serve",
        "-m", f"models:/{home.config.model_name}/{version}", "--env-manager", "local",
        "-h", "127.0.0.1", "-p", str(port), "--workers", str(workers),
    ]  # fmt: skip
    env = home.env(MLFLOW_TRACKING_URI=home.stores.mlflow_tracking_uri)
    return _start("mlflow models serve", command, env, port, "/invocations", "/ping", log)


@contextmanager
def both(home: Home, version: str, workers: int, logs: Path) -> Iterator[tuple[Server, Server]]:
    ours = start_ours(home, workers, logs / f"ours-{workers}w.log")
    try:
        peer = start_peer(home, version, workers, logs / f"peer-{workers}w.log")
        try:
            yield ours, peer
        finally:
            peer.stop()
    finally:
        ours.stop()


def agreement(ours: Server, peer: Server, ours_rows: list[dict[str, Any]], peer_rows: list[dict[str, Any]]) -> float:
    """The largest difference of P(positive) between the two on these rows (as a batch and one by one)."""

    def ask(server: Server, records: list[dict[str, Any]]) -> list[float]:
        answer = httpx.post(server.url + server.path, json={"dataframe_records": records}, timeout=60)
        if answer.status_code != 200:
            raise RuntimeError(f"{server.name} refused held-out rows: {answer.status_code} {answer.text[:500]}")
        predictions = answer.json()["predictions"]
        return [p[1] if isinstance(p, list) else p for p in predictions]  # the peer: predict_proba's rows

    ours_p = ask(ours, ours_rows) + [ask(ours, [r])[0] for r in ours_rows[:20]]
    peer_p = ask(peer, peer_rows) + [ask(peer, [r])[0] for r in peer_rows[:20]]
    if len(ours_p) != len(peer_p):
        raise RuntimeError(f"{len(ours_p)} answers from ours, {len(peer_p)} from the peer")
    return float(np.max(np.abs(np.asarray(ours_p) - np.asarray(peer_p))))


# --- load -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    """One locust run against one service."""

    requests: int  # answered in the measured span (after the warm-up)
    failures: int  # locust's failure count, the whole run
    seconds: float  # the measured span
    p50_ms: float
    p99_ms: float
    max_ms: float
    rows: int  # per request
    versions: dict[str, int]  # x-model-version -> answers, the whole run
    answers: list[tuple[float, float, bool, str | None]] = field(repr=False)  # end, ms, ok, version

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds

    @property
    def rows_per_second(self) -> float:
        return self.per_second * self.rows


def percentile(values: list[float], share: float) -> float:
    """Nearest rank."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(share * len(ordered))) - 1]


def locust_command(url: str, users: int, seconds: float, prefix: Path) -> list[str]:
    return [
        str(Path(sys.executable).with_name("locust")), "-f", str(LOCUSTFILE), "--headless",
        "-u", str(users), "-r", str(users), "-t", f"{seconds:g}s", "--host", url,
        "--csv", str(prefix), "--only-summary", "--loglevel", "WARNING", "--exit-code-on-error", "0",
    ]  # fmt: skip


def locust_failures(prefix: Path) -> int:
    with Path(f"{prefix}_stats.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["Name"] == "Aggregated":
                return int(row["Failure Count"])
    return 0


def start_locust(server: Server, body_file: Path, users: int, seconds: float, prefix: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "BENCH_SERVING_BODIES": str(body_file),
        "BENCH_SERVING_PATH": server.path,
        "BENCH_SERVING_OUT": f"{prefix}_answers.json",
    }
    with Path(f"{prefix}.log").open("ab") as out:
        return subprocess.Popen(
            locust_command(server.url, users, seconds, prefix), cwd=REPO_ROOT, env=env,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def finish_locust(process: subprocess.Popen[bytes], prefix: Path, rows: int, seconds: float) -> Load:
    if process.wait(timeout=seconds + 120) != 0:
        raise RuntimeError(f"locust exited with {process.returncode}: {Path(f'{prefix}.log').read_text()[-3000:]}")
    answers = [tuple(a) for a in json.loads(Path(f"{prefix}_answers.json").read_text())]
    if not answers:
        raise RuntimeError(f"locust made no request: {Path(f'{prefix}.log').read_text()[-3000:]}")
    first, last = min(a[0] for a in answers), max(a[0] for a in answers)
    measured = [a for a in answers if a[0] >= first + WARMUP_SECONDS and a[2]]
    latencies = [a[1] for a in measured]
    return Load(
        requests=len(measured),
        failures=locust_failures(prefix),
        seconds=last - (first + WARMUP_SECONDS),
        p50_ms=percentile(latencies, 0.50),
        p99_ms=percentile(latencies, 0.99),
        max_ms=max(latencies),
        rows=rows,
        versions=dict(Counter(str(a[3]) for a in answers if a[2])),
        answers=answers,
    )


def drive(server: Server, body_file: Path, users: int, seconds: float, prefix: Path, rows: int) -> Load:
    return finish_locust(start_locust(server, body_file, users, seconds, prefix), prefix, rows, seconds)


# --- the comparison -------------------------------------------------------------------------


@dataclass
class Row:
    workers: int
    kind: str  # single | batch
    users: int
    rows: int
    ours: list[Load] = field(default_factory=list)
    peer: list[Load] = field(default_factory=list)

    @property
    def throughput_ratios(self) -> list[float]:
        return [a.per_second / b.per_second for a, b in zip(self.ours, self.peer, strict=True)]

    @property
    def p99_ratios(self) -> list[float]:
        return [a.p99_ms / b.p99_ms for a, b in zip(self.ours, self.peer, strict=True)]

    @property
    def met(self) -> bool:
        return median(self.throughput_ratios) >= 1.0 and median(self.p99_ratios) <= 1.0


@dataclass(frozen=True)
class BodyFiles:
    ours: dict[str, Path]  # kind -> file
    peer: dict[str, Path]


def write_bodies(home: Home, folder: Path) -> BodyFiles:
    files: dict[str, dict[str, Path]] = {"ours": {}, "peer": {}}
    for side, records in (
        ("ours", ours_records(home.config, home.held_out)),
        ("peer", peer_records(home.config, home.held_out)),
    ):
        for kind, rows in (("single", 1), ("batch", BATCH_ROWS)):
            path = folder / f"bodies-{side}-{kind}.json"
            path.write_text(json.dumps(bodies(records, rows)))
            files[side][kind] = path
    return BodyFiles(files["ours"], files["peer"])


def scenarios(workers: int) -> list[tuple[str, int, int]]:
    every = [("single", u, 1) for u in SINGLE_USERS] + [("batch", u, BATCH_ROWS) for u in BATCH_USERS]
    return every if workers == 1 else [s for s in every if (s[0], s[1]) in TWO_WORKER_SCENARIOS]


def compare(
    ours: Server, peer: Server, files: BodyFiles, workers: int, repeats: int, seconds: float, folder: Path
) -> list[Row]:
    rows = [Row(workers, kind, users, n) for kind, users, n in scenarios(workers)]
    for repeat in range(repeats):
        for index, row in enumerate(rows):
            sides = [("ours", ours, files.ours), ("peer", peer, files.peer)]
            if (repeat + index) % 2:
                sides.reverse()
            for side, server, body in sides:
                prefix = folder / f"{workers}w-{row.kind}-{row.users}u-{repeat}-{side}"
                load = drive(server, body[row.kind], row.users, seconds, prefix, row.rows)
                getattr(row, side).append(load)
    return rows


# --- a promotion under load -----------------------------------------------------------------


@dataclass
class Promotion:
    workers: int
    old: str
    new: str
    load: Load
    promoted_at: float  # epoch seconds: the alias moved
    seen_after: float  # seconds until GET /model named the new version
    first_new_after: float  # seconds until the first answer by the new version
    last_old_after: float  # ... and the last by the old one (negative: before the alias moved)
    max_ms_around: float  # the slowest answer from the alias's move to 2 s after the first new answer
    logged: dict[str, int] = field(default_factory=dict)  # inference-log rows of the run by version


def promotion(home: Home, ours: Server, workers: int, old: str, body_file: Path, folder: Path) -> Promotion:
    """Drive ours; mid-run register a second version (fitted and logged before) and move the alias."""
    logged = log_version(home, SECOND_PARAMS)
    prefix = folder / "promotion"
    process = start_locust(ours, body_file, PROMOTION_USERS, PROMOTION_SECONDS, prefix)
    time.sleep(PROMOTE_AFTER)
    promoted_at = time.time()
    new = register(home, logged)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if httpx.get(f"{ours.url}/model", timeout=5).json().get("version") == new:
            break
        time.sleep(0.05)
    seen_after = time.time() - promoted_at
    load = finish_locust(process, prefix, 1, PROMOTION_SECONDS)
    said = {httpx.get(f"{ours.url}/model", timeout=5).json().get("version") for _ in range(10 * workers)}
    if said != {new}:  # asked often enough to reach every worker
        raise RuntimeError(f"after the promotion GET /model still names versions {sorted(map(str, said))}")
    new_times = [a[0] for a in load.answers if a[2] and a[3] == new]
    old_times = [a[0] for a in load.answers if a[2] and a[3] == old]
    first_new = min(new_times) if new_times else math.nan
    around = [a[1] for a in load.answers if promoted_at <= a[0] <= first_new + 2.0]
    return Promotion(
        workers=workers,
        old=old,
        new=new,
        load=load,
        promoted_at=promoted_at,
        seen_after=seen_after,
        first_new_after=first_new - promoted_at,
        last_old_after=(max(old_times) - promoted_at) if old_times else math.nan,
        max_ms_around=max(around) if around else math.nan,
    )


def logged_versions(home: Home, since: float, until: float) -> dict[str, int]:
    """Rows of the inference log answered in [since, until] (epoch seconds), by model version."""
    from tasks.stores import DataStore

    store = DataStore(home.stores.data_uri)
    counts: Counter[str] = Counter()
    low, high = pd.Timestamp(since, unit="s", tz=UTC), pd.Timestamp(until, unit="s", tz=UTC)
    for path in store.find("inference", home.config.name, PART):
        with store.open(path) as handle:
            frame = pd.read_parquet(handle, columns=[MODEL_VERSION, SCORED_AT])
        inside = frame[(frame[SCORED_AT] >= low) & (frame[SCORED_AT] <= high)]
        counts.update(inside[MODEL_VERSION].astype(str).value_counts().to_dict())
    return dict(counts)


# --- the section ----------------------------------------------------------------------------


@dataclass
class Result:
    rows: list[Row]
    promotion: Promotion
    difference: float  # the largest |P| difference between the two on held-out rows
    train_rows: int
    pool_rows: int
    fit_seconds: float
    minutes: float
    repeats: int
    seconds: float
    load: tuple[float, float]  # the machine's 1-minute load average before and after


def _spread(values: list[float], digits: int = 2) -> str:
    return f"{median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def _paragraph(*parts: str) -> list[str]:
    return textwrap.wrap(" ".join(parts), width=110, break_long_words=False, break_on_hyphens=False)


def markdown(result: Result, provenance: str = "") -> str:
    promo = result.promotion
    lines = [
        f"{SECTION}: our service against `mlflow models serve`, the same champion, locust on loopback",
        "",
        *_paragraph(
            "One champion of `flights.yaml`: the config's pipeline fitted on 2013-01-01..14",
            f"({result.train_rows} rows,",
            f"{result.fit_seconds:.0f} s with its logging), registered as training does, served side by side on this",
            "machine by (a) `python -m flows.serve` (every request validated against the config's rules, every",
            f"answered row to the inference log, the alias polled every {POLL_SECONDS:g} s) and (b) the peer, `mlflow",
            "models serve -m models:/<name>/<version> --env-manager local`, from the same SQLite store and",
            f"environment. Both answered {result.pool_rows} held-out rows (2013-01-15..21) with the same P(late)",
            "before",
            f"anything was timed (largest difference {result.difference:.1e}; the peer's predict is predict_proba, its",
            "column 1 compared). Load: `locust --headless` (bench/locustfile_serving.py, a process of its own on the",
            "same two cores), users posting held-out rows back to back in MLflow's `dataframe_records` shape: to ours",
            "the whole record (the timestamp and row key too, which it logs), to the peer the features.",
            f"Runs of {result.seconds:g} s, the first {WARMUP_SECONDS:g} s not counted; the sides alternate,",
            f"{result.repeats} runs each: medians (min-max). Latency is locust's per request (ms, nearest rank);",
            "ratios are ours / peer, run pair by run pair (throughput: above 1 favours ours; p99: below 1 does).",
            "Goal (issue 17): at least the peer's throughput and p99, with validation and logging on.",
        ),
    ]
    if provenance:
        lines += ["", provenance]
    lines += [
        "",
        "| workers | load | ours req/s | peer req/s | ours rows/s | peer rows/s | ours p50 / p99 ms "
        "| peer p50 / p99 ms | throughput ours/peer | p99 ours/peer | failures ours / peer | goal |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in result.rows:
        what = "1 record" if row.kind == "single" else f"{row.rows}-row batches"
        ours, peer = row.ours, row.peer
        lines.append(
            f"| {row.workers} | {what}, {row.users} user{'s' if row.users > 1 else ''} "
            f"| {_spread([x.per_second for x in ours], 0)} | {_spread([x.per_second for x in peer], 0)} "
            f"| {median([x.rows_per_second for x in ours]):.0f} | {median([x.rows_per_second for x in peer]):.0f} "
            f"| {median([x.p50_ms for x in ours]):.1f} / {median([x.p99_ms for x in ours]):.1f} "
            f"| {median([x.p50_ms for x in peer]):.1f} / {median([x.p99_ms for x in peer]):.1f} "
            f"| {_spread(row.throughput_ratios)} | {_spread(row.p99_ratios)} "
            f"| {sum(x.failures for x in ours)} / {sum(x.failures for x in peer)} "
            f"| {'met' if row.met else 'not met'} |"
        )
    met = sum(row.met for row in result.rows)
    versions = ", ".join(f"{n} by version {v}" for v, n in sorted(promo.load.versions.items()))
    logged = ", ".join(f"{n} of version {v}" for v, n in sorted(promo.logged.items()))
    answered = sum(promo.load.versions.values())
    lines += [
        "",
        *_paragraph(
            f"Goal met on {met} of {len(result.rows)} rows (the throughput and the p99 ratio both). The machine was",
            f"shared with other work: 1-minute load average {result.load[0]:.1f} before the section,",
            f"{result.load[1]:.1f} after.",
        ),
        "",
        *_paragraph(
            f"**Promotion under load.** {PROMOTION_USERS} users posting single records to ours",
            f"({promo.workers} worker{'s' if promo.workers > 1 else ''}, each following the alias on its own) for",
            f"{PROMOTION_SECONDS} s; {PROMOTE_AFTER:g} s in, version {promo.new} (other parameters, fitted and logged",
            "beforehand) was registered and the champion alias moved to it. Failed requests:",
            f"**{promo.load.failures}**; {answered} answered, {versions} (`x-model-version`); the inference log",
            f"holds {logged} for the run (it also has the answers to the few requests locust abandoned at its end).",
            f"GET /model named version {promo.new} {promo.seen_after:.2f} s after the alias moved; the first answer",
            f"by it came {promo.first_new_after:.2f} s after, the last by version {promo.old}",
            f"{promo.last_old_after:.2f} s after (the poll, then the download, hash check, load and smoke test",
            "beside the old version, which answers meanwhile). The slowest answer from the move to 2 s past the",
            f"switch: {promo.max_ms_around:.0f} ms (the run's p99 {promo.load.p99_ms:.1f} ms).",
        ),
        "",
        f"The section took {result.minutes:.1f} minutes.",
    ]
    return "\n".join(lines) + "\n"


def measure(repeats: int = 2, seconds: float = SECONDS, workers: tuple[int, ...] = WORKERS) -> Result:
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="driftloop-bench-serving-") as tmp:
        folder = Path(tmp)
        home = make_home(folder)
        fit_started = time.monotonic()
        first = register(home, log_version(home, {}))
        fit_seconds = time.monotonic() - fit_started
        files = write_bodies(home, folder)
        check_ours = ours_records(home.config, home.held_out)[:BATCH_ROWS]
        check_peer = peer_records(home.config, home.held_out)[:BATCH_ROWS]
        rows: list[Row] = []
        promoted: Promotion | None = None
        difference = 0.0
        for count in workers:
            with both(home, first, count, folder) as (ours, peer):
                served = httpx.get(f"{ours.url}/model", timeout=10).json().get("version")
                if served != first:
                    raise RuntimeError(f"ours serves version {served}, the peer version {first}: not timed")
                difference = max(difference, agreement(ours, peer, check_ours, check_peer))
                if difference > AGREEMENT:
                    raise RuntimeError(f"the peer answers differently from ours (by {difference:.2e}): not timed")
                rows += compare(ours, peer, files, count, repeats, seconds, folder)
                if count == workers[-1]:  # last: the champion moves
                    peer.stop()
                    promoted = promotion(home, ours, count, first, files.ours["single"], folder)
                    ours.stop()  # graceful: the inference log is flushed
                    answered = [a[0] for a in promoted.load.answers]
                    promoted.logged = logged_versions(home, min(answered) - 1, max(answered) + 1)
        if promoted is None:
            raise RuntimeError("no worker count to measure")
    return Result(
        rows, promoted, difference, len(home.train), len(check_ours), fit_seconds,
        (time.monotonic() - started) / 60, repeats, seconds, (load_before, os.getloadavg()[0]),
    )  # fmt: skip


def run(repeats: int = 2, seconds: float = SECONDS, workers: tuple[int, ...] = WORKERS, provenance: str = "") -> str:
    """The section's markdown (`python -m bench` runs it with the others)."""
    return markdown(measure(repeats, seconds, workers), provenance)


def write_section(text: str, output: Path) -> None:
    """Replace section 9 of BENCHMARKS.md (up to the next `## `), or append it."""
    current = output.read_text(encoding="utf-8")
    pattern = re.compile(rf"^{re.escape(SECTION)}.*?(?=^## |\Z)", re.S | re.M)
    updated = pattern.sub(lambda _: text + "\n", current, count=1) if pattern.search(current) else None
    if updated is None:
        updated = current.rstrip("\n") + "\n\n" + text
    output.write_text(updated.rstrip("\n") + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each load on each side (default 2)")
    parser.add_argument("--seconds", type=float, default=SECONDS, help=f"per locust run (default {SECONDS})")
    parser.add_argument("--workers", type=int, nargs="+", default=list(WORKERS), help="worker counts (default 1 2)")
    parser.add_argument("--write", action="store_true", help="put the section into BENCHMARKS.md (section 9)")
    parser.add_argument("--output", default=str(REPO_ROOT / "BENCHMARKS.md"))
    args = parser.parse_args(argv)
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

    command = " ".join(["python -m bench.serving", *(argv if argv is not None else sys.argv[1:])])
    provenance = f"Measured on its own (`{command}`, on {machine()}); the next `make bench` writes it with the rest."
    text = run(args.repeats, args.seconds, tuple(args.workers), provenance)
    print(text)
    if args.write:
        write_section(text, Path(args.output))
        print(f"wrote section 9 of {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
