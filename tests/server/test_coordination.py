"""Promotion's lock and history across hosts, on a real PostgreSQL: what a file lock cannot give.

"Hosts" are separate processes with nothing on disk in common: only the coordination database.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.audit import PROMOTED
from tasks.audit_pg import TABLE
from tasks.history_store import audit_log
from tasks.locks import promotion_lock
from tasks.pgsql import LockTimeout, advisory_lock, is_postgres_url
from tasks.stores import Stores
from tests.postgres import Cluster

pytestmark = pytest.mark.e2e

HOLD = """
import sys, time
from tasks.locks import promotion_lock
with promotion_lock(sys.argv[1], "m"):
    print("held", flush=True)
    time.sleep(600)
"""

APPEND = """
import sys
from tasks.history_store import audit_log
log = audit_log(sys.argv[1], "m")
for n in range(int(sys.argv[3])):
    log.append(id=f"{sys.argv[2]}-{n}", event="promoted", champion_before=None, champion_after="1",
               version="1", trigger="test", reason="from " + sys.argv[2])
"""


def coordination(cluster: Cluster, name: str) -> str:
    cluster.create_database(name)
    return cluster.url(name)


def holder(url: str, repo_root: Path) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, url], cwd=repo_root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "held", process.stderr.read() if process.stderr else ""
    return process


def test_the_lock_excludes_another_host_and_frees_itself_when_the_holder_is_killed(
    cluster: Cluster, repo_root: Path
) -> None:
    url = coordination(cluster, "locks")
    process = holder(url, repo_root)
    try:
        waiting = advisory_lock(url, "promote", "m", timeout=1.0)
        with pytest.raises(LockTimeout, match="still held by another host"):
            waiting.__enter__()
        with promotion_lock(url, "another-model"):  # one lock per model, not one for all
            pass
    finally:
        process.kill()  # kill -9: no chance to unlock; the server notices the connection is gone
        process.wait()
    started = time.monotonic()
    with advisory_lock(url, "promote", "m", timeout=30.0):
        waited = time.monotonic() - started
    assert waited < 10.0


def test_history_from_several_hosts_is_one_intact_chain(cluster: Cluster, repo_root: Path) -> None:
    url = coordination(cluster, "history")
    writers = [
        subprocess.Popen([sys.executable, "-c", APPEND, url, f"host{n}", "8"], cwd=repo_root, stderr=subprocess.PIPE)
        for n in range(3)
    ]
    for writer in writers:
        assert writer.wait(timeout=120) == 0, writer.stderr.read() if writer.stderr else ""
    log = audit_log(url, "m")
    entries = log.entries()
    assert len(entries) == 24
    assert {entry.reason for entry in entries} == {"from host0", "from host1", "from host2"}
    assert log.verify() == []
    again = log.append(
        id="host1-3", event=PROMOTED, champion_before=None, champion_after="1", version="1", trigger="t", reason="x"
    )
    assert again.reason == "from host1"  # a repeated id returns the recorded entry and adds nothing
    assert len(log.entries()) == 24
    assert audit_log(url, "other").entries() == []

    second = json.loads(cluster.query("history", f"SELECT line FROM {TABLE} WHERE model = 'm' AND seq = 2")[0][0])
    second["reason"] = "edited"
    with __import__("psycopg").connect(cluster.dsn("history")) as db:
        db.execute(f"UPDATE {TABLE} SET line = %s WHERE model = 'm' AND seq = 2", (json.dumps(second, sort_keys=True),))
    problems = log.verify()
    assert len(problems) == 1
    assert f"{TABLE}/m:2: content does not match" in problems[0]
    assert "history" in problems[0]


def test_the_switch_moves_lock_and_history_and_refuses_what_cannot_coordinate(tmp_path: Path) -> None:
    url = "postgresql+psycopg://driftloop:secret@db.internal:5432/driftloop"
    stores = Stores.from_env({"DRIFTLOOP_HOME": str(tmp_path), "DRIFTLOOP_COORDINATION_URL": url})
    assert stores.promotion_locks == url
    assert stores.history == url
    embedded = Stores.from_env({"DRIFTLOOP_HOME": str(tmp_path)})
    assert embedded.promotion_locks == embedded.lock_dir
    assert embedded.history == embedded.audit_dir
    assert is_postgres_url("postgresql://x/y")
    assert not is_postgres_url("sqlite:///x.db")
    with pytest.raises(ValueError, match="must be a PostgreSQL URL") as refused:
        Stores.from_env({"DRIFTLOOP_HOME": str(tmp_path), "DRIFTLOOP_COORDINATION_URL": "mysql://u:pw@db/x"})
    assert "pw" not in str(refused.value)


def test_a_lock_lost_to_a_database_restart_is_reported_not_ignored(cluster: Cluster) -> None:
    url = coordination(cluster, "restart")
    held = advisory_lock(url, "promote", "m", timeout=5.0)
    held.__enter__()
    cluster.stop()
    cluster.start()
    with pytest.raises(RuntimeError, match="lost while held"):
        held.__exit__(None, None, None)
