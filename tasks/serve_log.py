"""Online answers into the inference log, off the request path, so monitoring sees production traffic.

A request hands its rows to `OnlineLog.add` (a list append under a lock) and is answered; a
background thread writes what has gathered as one partition of the inference log every
`serving.log_flush_seconds`, or sooner once `serving.log_flush_rows` rows wait. Each write is a batch
of its own (`online-<UTC time>-<process>-<sequence>`), so processes and flushes never overwrite each
other. What a crash can lose is bounded and documented: the rows answered in the last flush
interval (or the last `log_flush_rows` rows), never more. A graceful stop flushes everything.
A write that fails (the store is down) keeps its rows and is tried again at the next flush; rows
beyond `MAX_PENDING_FLUSHES` intervals' worth are dropped and counted, so memory stays bounded.

The work of a write (parsing the requests again, deriving, checking against the log's schema,
Parquet) runs in a process of its own when the service gives one (`executor`): in the serving process
it would share the GIL with the request threads and every flush would show in their tail latency.
So what a request hands over is what it already has, its body as received and its predictions; the
writer rebuilds the rows with the same contract code (tasks/serve_request.py), deterministically.

Small writes every few seconds would leave monitoring thousands of files to open per window, so once
an hour is over its partitions are merged into one (`online-<hour>-<writer>`), and a graceful stop
merges what it wrote too: a few files per process and hour (tasks/inference_log.py `merge`).
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import signal
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pandera.pandas as pa

from tasks.inference_log import InferenceLog, record_columns
from tasks.serve_request import records_of, request_schema, validate_request
from tasks.settings import TrainingConfig
from tasks.stores import DataStore

log = logging.getLogger("driftloop.serve")

MAX_PENDING_FLUSHES = 20  # rows kept through a store outage: this many flushes' worth of log_flush_rows


@dataclass(frozen=True)
class Answered:
    """One answered request: its body as received, how many rows it held, and what was answered."""

    body: bytes  # the request's JSON, which passed the contract (the writer parses it again)
    rows: int
    prediction: np.ndarray
    confidence: np.ndarray | None  # multiclass only, like the two below
    probabilities: np.ndarray | None  # every class's probability, JSON text per row
    model_name: str
    model_version: str
    request_id: str
    answered_at: datetime


class OnlineLog:
    """Gathers answered rows and appends them to the inference log in the background."""

    def __init__(
        self,
        config: TrainingConfig,
        data_uri: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        executor: Executor | None = None,
    ) -> None:
        self.config = config
        self.config_json = config.model_dump_json()  # what the writer process rebuilds the config from
        self.data_uri = data_uri
        self.clock = clock
        self.executor = executor  # None: writes run in this process (tests, tools)
        self.writer = f"{os.getpid()}-{uuid.uuid4().hex[:6]}"  # unique per process start: names never clash
        self.unmerged: list[tuple[str, str]] = []  # (hour, batch id) written and not merged yet
        self.pending: list[Answered] = []
        self.pending_rows = 0
        self.written_rows = 0
        self.dropped_rows = 0
        self.failed_writes = 0
        self.last_error: str | None = None
        self._sequence = 0
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, answered: Answered) -> None:
        with self._lock:
            self.pending.append(answered)
            self.pending_rows += answered.rows
            full = self.pending_rows >= self.config.serving.log_flush_rows
        if full:
            self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="inference-log-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.config.serving.log_flush_seconds)
            self._wake.clear()
            self.flush()

    def stop(self) -> None:
        """Write everything answered so far, then stop the writer."""
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=60)
        self.flush()
        self.merge(everything=True)

    def flush(self) -> int:
        """Write what waits, one partition per model version; returns the rows written."""
        with self._write_lock:
            with self._lock:
                taken, self.pending, self.pending_rows = self.pending, [], 0
            if not taken:
                return 0
            written, kept = 0, []
            for version in dict.fromkeys(a.model_version for a in taken):
                group = [a for a in taken if a.model_version == version]
                try:
                    written += self._write(group)
                except Exception as error:  # the store is down: keep the rows for the next flush
                    self.failed_writes += 1
                    self.last_error = f"writing the inference log failed: {type(error).__name__}: {error}"
                    log.error(self.last_error)
                    kept += group
            if kept:
                self._keep(kept)
            else:
                self.last_error = None
            self.written_rows += written
            self.merge()
            return written

    def merge(self, everything: bool = False) -> None:
        """Merge the partitions of every finished hour (all of them when stopping) into one per hour."""
        hour = f"{self.clock():%Y%m%dT%H}"
        done = sorted({h for h, _ in self.unmerged if everything or h < hour})
        for finished in done:
            batches = [b for h, b in self.unmerged if h == finished]
            if len(batches) > 1:
                try:
                    self._call(
                        merge_partitions, self.config_json, self.data_uri, batches, f"online-{finished}-{self.writer}"
                    )
                except Exception as error:  # the small partitions stay readable; merged on the next try
                    self.last_error = f"merging the inference log's partitions failed: {type(error).__name__}: {error}"
                    log.error(self.last_error)
                    return
            self.unmerged = [(h, b) for h, b in self.unmerged if h != finished]

    def _keep(self, kept: list[Answered]) -> None:
        limit = MAX_PENDING_FLUSHES * self.config.serving.log_flush_rows
        with self._lock:
            self.pending = kept + self.pending
            self.pending_rows = sum(a.rows for a in self.pending)
            while self.pending_rows > limit and len(self.pending) > 1:
                oldest = self.pending.pop(0)
                self.pending_rows -= oldest.rows
                self.dropped_rows += oldest.rows

    def _call(self, function: Callable[..., Any], *args: Any) -> Any:
        if self.executor is None:
            return function(*args)
        return self.executor.submit(function, *args).result()  # this thread waits; the GIL is free

    def _write(self, group: list[Answered]) -> int:
        self._sequence += 1
        now = self.clock()
        batch_id = f"online-{now:%Y%m%dT%H%M%S}-{self.writer}-{self._sequence:06d}"
        written = self._call(write_answers, self.config_json, self.data_uri, batch_id, group)
        self.unmerged.append((f"{now:%Y%m%dT%H}", batch_id))
        return int(written)


@functools.lru_cache(maxsize=8)
def _config(config_json: str) -> tuple[TrainingConfig, pa.DataFrameSchema]:
    config = TrainingConfig.model_validate_json(config_json)
    return config, request_schema(config)


def write_answers(config_json: str, data_uri: str, batch_id: str, group: list[Answered]) -> int:
    """Rebuild the answered rows from their requests and append them as one partition; in the writer process.

    The bodies passed the contract when they were answered, so they pass it again (the same code on
    the same bytes); the log's own schema then checks the whole entry before anything is written.
    """
    config, schema = _config(config_json)
    frames = [records_of(orjson.loads(a.body), max(a.rows, 1)) for a in group]
    rows = validate_request(config, pd.concat(frames, ignore_index=True), schema)[record_columns(config)]
    sizes = [a.rows for a in group]
    if len(rows) != sum(sizes):
        raise ValueError(f"{len(rows)} rows rebuilt from the requests, but {sum(sizes)} were answered")
    multiclass = config.task == "multiclass"
    InferenceLog(DataStore(data_uri), config).append(
        rows,
        np.concatenate([a.prediction for a in group]),
        batch_id=batch_id,
        model_name=group[0].model_name,
        model_version=group[0].model_version,
        scored_at=pd.Series(np.repeat(np.array([a.answered_at for a in group], dtype=object), sizes)),
        confidence=np.concatenate([a.confidence for a in group]) if multiclass else None,
        probabilities=pd.Series(np.concatenate([a.probabilities for a in group])) if multiclass else None,
        request_ids=pd.Series(np.repeat(np.array([a.request_id for a in group], dtype=object), sizes)),
    )
    return len(rows)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def start_writer_process() -> ProcessPoolExecutor:
    """A one-process pool for the log's writes, started now, deaf to Ctrl-C and SIGTERM for its whole life.

    Those signals reach a whole process group (a terminal, `tini -g`, a killpg): the writer must
    outlive them so the service's graceful stop can still hand it the last flush; it ends with the
    pool's shutdown, or when the service's process is gone. An ignored signal stays ignored across
    exec and Python leaves it so, which also covers the seconds the new process spends importing;
    so the process is started from the main thread with both ignored there for that moment.
    """
    pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    main = threading.current_thread() is threading.main_thread()
    saved = [signal.signal(s, signal.SIG_IGN) for s in STOP_SIGNALS] if main else []
    try:
        ready = pool.submit(_writer_ready)  # the process starts here, inheriting the ignored signals
    finally:
        for number, handler in zip(STOP_SIGNALS, saved, strict=False):
            signal.signal(number, handler)
    ready.result(timeout=120)  # its imports done before the first flush needs them
    return pool


def _writer_ready() -> bool:
    return True


def merge_partitions(config_json: str, data_uri: str, batches: list[str], into: str) -> str:
    """Merge partitions of the inference log into one (tasks/inference_log.py `merge`); in the writer process."""
    config, _ = _config(config_json)
    return InferenceLog(DataStore(data_uri), config).merge(batches, into=into)
