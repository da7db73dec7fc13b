"""The tuning-worker flow: one more process spending a shared Optuna study's trial budget.

Started by the training flow's tune stage (tuning.workers > 1) through the `tuning-worker/<dataset>`
deployment, so it runs wherever the work pool has a free worker. It reads the frames the training
run handed off, joins the study in the shared database and runs trials until the budget is spent
or the deadline passes (tasks/tune_share.py).
"""

from __future__ import annotations

import os
import socket

from prefect import flow, get_run_logger

from tasks.settings import TrainingConfig
from tasks.stores import Stores
from tasks.tune_share import WORKER_FLOW, worker_share


@flow(name=WORKER_FLOW)
def tuning_worker(config: TrainingConfig, study_name: str, handoff: str, deadline: float, worker: int = 1) -> int:
    """Join study `study_name` as worker number `worker`; returns how many trials ran here."""
    label = f"worker {worker} ({socket.gethostname()}:{os.getpid()})"
    ran = worker_share(config, Stores.from_env(), study_name, handoff, deadline, worker, label)
    get_run_logger().info("%s ran %d trials of study %s", label, ran, study_name)
    return ran
