"""The promotion history: append-only, idempotent by entry id, and tamper-evident."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from tasks.audit import GENESIS, AuditLog, history_markdown


def add(log: AuditLog, id: str, event: str = "promoted", before: str | None = None, after: str | None = "1"):
    return log.append(
        id=id, event=event, champion_before=before, champion_after=after, version=after, trigger="t", reason="r"
    )


def test_entries_are_appended_in_order_and_chained(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, "m")
    first = add(log, "promoted:1")
    second = add(log, "promoted:2", before="1", after="2")
    assert [e.id for e in log.entries()] == ["promoted:1", "promoted:2"]
    assert first.previous_sha256 == GENESIS
    assert second.previous_sha256 == first.sha256
    assert log.verify() == []


def test_appending_an_id_again_records_nothing_new(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, "m")
    first = add(log, "promoted:1")
    again = log.append(
        id="promoted:1", event="promoted", champion_before=None, champion_after="1", version="1",
        trigger="reconciliation", reason="finished after a crash",
    )  # fmt: skip
    assert again == first
    assert len(log.entries()) == 1


def test_an_edited_line_is_found(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, "m")
    add(log, "promoted:1")
    add(log, "promoted:2", before="1", after="2")
    lines = log.path.read_text().splitlines()
    edited = json.loads(lines[0]) | {"champion_after": "9"}
    log.path.write_text("\n".join([json.dumps(edited), lines[1]]) + "\n")
    problems = log.verify()
    assert len(problems) == 1
    assert ":1: content does not match" in problems[0]


def test_a_deleted_line_is_found(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, "m")
    for number in range(1, 4):
        add(log, f"promoted:{number}", after=str(number))
    lines = log.path.read_text().splitlines()
    log.path.write_text("\n".join([lines[0], lines[2]]) + "\n")
    assert any(":2: does not follow line 1" in p for p in log.verify())


def test_concurrent_writers_keep_one_unbroken_chain(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, "m")
    threads = [threading.Thread(target=add, args=(AuditLog(tmp_path, "m"), f"e:{n}")) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(log.entries()) == 20
    assert log.verify() == []


def test_the_markdown_shows_newest_first_and_marks_forced_promotions(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, "m")
    add(log, "promoted:1")
    log.append(
        id="forced:2", event="forced_promotion", champion_before="1", champion_after="2", version="2",
        trigger="manual", reason="r", gate={"passed": False, "violations": ["beats champion: no"]}, forced=True,
    )  # fmt: skip
    text = history_markdown("m", log.entries())
    rows = [line for line in text.splitlines() if line.startswith("| 20")]
    assert "forced_promotion" in rows[0]
    assert "promoted" in rows[1]
    assert "overridden (--force)" in rows[0]
    assert "beats champion: no" in rows[0]


def test_the_actor_outside_prefect_is_user_at_host(tmp_path: Path) -> None:
    entry = add(AuditLog(tmp_path, "m"), "promoted:1")
    assert "@" in entry.actor
