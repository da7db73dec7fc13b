"""Online answers into the inference log, off the request path, so monitoring sees production traffic.

A request hands its rows to `OnlineLog.add` (a list append under a lock) and is answered; a
background thread writes what has gathered as one partition of the inference log every
`serving.log_flush_seconds`, or sooner once `serving.log_flush_rows` rows wait. Each write is a batch
of its own (`online-<UTC time>-<process>-<sequence>`), so processes and flushes never overwrite each
other. What a crash can lose is bounded and documented: the rows answered in the last flush
interval (or the last `log_flush_rows` rows), never more. A graceful stop flushes everything.
A write that fails (the store is down) keeps its rows and is tried again at the next flush; rows
beyond `MAX_PENDING_FLUSHES` intervals' worth are dropped and counted, so memory stays bounded.

Small writes every few seconds would leave monitoring thousands of files to open per window, so once
an hour is over its partitions are merged into one (`online-<hour>-<writer>`), and a graceful stop
merges what it wrote too: a few files per process and hour (tasks/inference_log.py `merge`).
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from tasks.inference_log import InferenceLog
from tasks.settings import TrainingConfig
from tasks.stores import DataStore

log = logging.getLogger("driftloop.serve")

MAX_PENDING_FLUSHES = 20  # rows kept through a store outage: this many flushes' worth of log_flush_rows


@dataclass(frozen=True)
class Answered:
    """The rows of one answered request, as scored."""

    rows: pd.DataFrame  # validated request rows (timestamp, key, features)
    prediction: pd.Series
    confidence: pd.Series | None
    probabilities: pd.Series | None
    model_name: str
    model_version: str
    request_id: str
    answered_at: datetime


class OnlineLog:
    """Gathers answered rows and appends them to the inference log in the background."""

    def __init__(
        self, config: TrainingConfig, data_uri: str, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self.config = config
        self.clock = clock
        self.writer = f"{os.getpid()}-{uuid.uuid4().hex[:6]}"  # unique per process start: names never clash
        self.unmerged: list[tuple[str, str]] = []  # (hour, batch id) written and not merged yet
        self.merged_partitions = 0
        self.log = InferenceLog(DataStore(data_uri), config)
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
            self.pending_rows += len(answered.rows)
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
                    self.log.merge(batches, into=f"online-{finished}-{self.writer}")
                except Exception as error:  # the small partitions stay readable; merged on the next try
                    self.last_error = f"merging the inference log's partitions failed: {type(error).__name__}: {error}"
                    log.error(self.last_error)
                    return
                self.merged_partitions += len(batches)
            self.unmerged = [(h, b) for h, b in self.unmerged if h != finished]

    def _keep(self, kept: list[Answered]) -> None:
        limit = MAX_PENDING_FLUSHES * self.config.serving.log_flush_rows
        with self._lock:
            self.pending = kept + self.pending
            self.pending_rows = sum(len(a.rows) for a in self.pending)
            while self.pending_rows > limit and len(self.pending) > 1:
                oldest = self.pending.pop(0)
                self.pending_rows -= len(oldest.rows)
                self.dropped_rows += len(oldest.rows)

    def _write(self, group: list[Answered]) -> int:
        # numpy concatenation, not pandas: a flush gathers hundreds of one-row answers, and pandas'
        # per-object cost on each would be most of the flush, paid by the request threads (the GIL)
        rows = pd.concat([a.rows for a in group], ignore_index=True)
        sizes = [len(a.rows) for a in group]
        prediction = pd.Series(np.concatenate([np.asarray(a.prediction) for a in group]))
        confidence = probabilities = None
        if self.config.task == "multiclass":
            confidence = pd.Series(np.concatenate([np.asarray(a.confidence) for a in group]))
            probabilities = pd.Series(np.concatenate([np.asarray(a.probabilities, dtype=object) for a in group]))
        answered_at = pd.Series(np.repeat(np.array([a.answered_at for a in group], dtype=object), sizes))
        request_ids = pd.Series(np.repeat(np.array([a.request_id for a in group], dtype=object), sizes))
        self._sequence += 1
        now = self.clock()
        batch_id = f"online-{now:%Y%m%dT%H%M%S}-{self.writer}-{self._sequence:06d}"
        self.log.append(
            rows,
            prediction,
            batch_id=batch_id,
            model_name=group[0].model_name,
            model_version=group[0].model_version,
            scored_at=answered_at,
            confidence=confidence,
            probabilities=probabilities,
            request_ids=request_ids,
            rows_checked=True,  # each request's rows passed the scoring contract before they were answered
        )
        self.unmerged.append((f"{now:%Y%m%dT%H}", batch_id))
        return len(rows)
