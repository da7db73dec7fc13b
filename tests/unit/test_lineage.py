"""The idempotency key knows the code without git: a changed source file or library is a new key."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import pytest

from tasks.lineage import code_sha256, git_revision, idempotency_key
from tasks.settings import TimeWindow

WINDOW = TimeWindow(start=date(2013, 1, 1), end=date(2013, 3, 1))


@pytest.fixture
def installed(tmp_path: Path, repo_root: Path) -> Path:
    """driftloop's packages copied where no git checkout is: as an installed wheel lays them out."""
    for package in ("tasks", "flows"):
        shutil.copytree(repo_root / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def test_outside_a_checkout_the_code_still_has_an_identity(installed: Path, repo_root: Path) -> None:
    assert git_revision(installed) == "unknown"
    assert code_sha256(installed) == code_sha256(repo_root)  # the same files: the same code


def test_a_changed_source_file_changes_the_key(installed: Path) -> None:
    before = code_sha256(installed)
    key = idempotency_key(before, "config", WINDOW, ["b"])
    (installed / "tasks" / "gate.py").write_text((installed / "tasks" / "gate.py").read_text() + "\n# patched\n")

    after = code_sha256(installed)
    assert after != before
    assert idempotency_key(after, "config", WINDOW, ["b"]) != key


def test_the_key_ignores_batch_order_but_not_the_window() -> None:
    key = idempotency_key("code", "config", WINDOW, ["a", "b"])

    assert idempotency_key("code", "config", WINDOW, ["b", "a"]) == key
    assert (
        idempotency_key("code", "config", TimeWindow(start=date(2013, 1, 2), end=date(2013, 3, 1)), ["a", "b"]) != key
    )
