"""The OpenMP thread policy of fits and predictions (tasks/threads.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pydantic import ValidationError
from threadpoolctl import threadpool_info

import tasks.model  # noqa: F401  (loads scikit-learn's OpenMP runtime, as every fitting process has)
from tasks.settings import ModelConfig
from tasks.threads import ROWS_PER_EXTRA_THREAD, available_cores, model_threads, threads_for


def _openmp_threads() -> set[int]:
    return {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "openmp"}


@pytest.mark.parametrize(
    ("rows", "cores", "expected"),
    [
        (0, 8, 1),
        (3_000, 2, 1),  # a small fit: one thread even with cores to spare
        (ROWS_PER_EXTRA_THREAD - 1, 8, 1),
        (ROWS_PER_EXTRA_THREAD, 8, 2),
        (3 * ROWS_PER_EXTRA_THREAD, 8, 4),
        (10**7, 2, 2),  # never more than the cores
        (10**7, 1, 1),
    ],
)
def test_auto_gives_small_fits_one_thread_and_large_ones_the_cores(rows: int, cores: int, expected: int) -> None:
    assert threads_for(rows, "auto", cores) == expected


def test_a_configured_count_is_used_whatever_the_rows_but_capped_by_the_cores() -> None:
    assert threads_for(10, 2, cores=4) == 2
    assert threads_for(10**7, 1, cores=4) == 1
    assert threads_for(10, 16, cores=4) == 4


def test_the_cores_are_this_process_s_affinity() -> None:
    assert available_cores() == len(os.sched_getaffinity(0))


def test_the_limit_holds_inside_the_block_and_is_lifted_after() -> None:
    before = _openmp_threads()
    assert before, "scikit-learn's OpenMP runtime is not loaded"
    for rows, configured, expected in [(10, "auto", 1), (10**7, "auto", available_cores()), (10**7, 1, 1)]:
        with model_threads(rows, configured) as threads:
            assert threads == expected
            assert _openmp_threads() == {expected}
        assert _openmp_threads() == before


def test_model_threads_is_auto_by_default_and_refuses_nonsense() -> None:
    assert ModelConfig().threads == "auto"
    assert ModelConfig(threads=3).threads == 3
    for bad in (0, -1, "all"):
        with pytest.raises(ValidationError, match="threads"):
            ModelConfig(threads=bad)


@pytest.mark.parametrize(("given", "expected"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_waiting_openmp_threads_sleep_unless_the_user_said_otherwise(given: str | None, expected: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | (
        {} if given is None else {"OMP_WAIT_POLICY": given}
    )
    probe = "import flows, os; print(os.environ['OMP_WAIT_POLICY'])"  # flows/ first, as every entry point
    found = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert found.stdout.strip() == expected
