"""The alert history the cool-down reads: one small JSON file per alert, so an object store is enough.

No appends and no locks: object stores have neither. The newest `as_of` inside the files decides.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from tasks.drift import json_safe
from tasks.drift_policy import require_aware
from tasks.stores import DataStore

log = logging.getLogger(__name__)


def record_alert(store: DataStore, dataset: str, model_name: str, as_of: datetime, payload: dict[str, Any]) -> str:
    """One JSON object per alert (no appends: object stores have none); returns its path.

    The name starts with the UTC time so a listing reads in order, and ends with a short random
    suffix so two alerts in the same second never overwrite each other.
    """
    stamp = require_aware(as_of, "as_of").astimezone(UTC)
    name = f"alerts/{model_name}/{stamp:%Y%m%dT%H%M%S%z}-{uuid.uuid4().hex[:8]}.json"
    body = {"as_of": stamp.isoformat(), "dataset": dataset, "model_name": model_name, "payload": payload}
    return store.put("monitoring", dataset, name, json.dumps(json_safe(body), indent=2, default=str).encode())


def last_alert_at(store: DataStore, dataset: str, model_name: str) -> datetime | None:
    """The latest `as_of` recorded inside the alert files (names can lie; contents are the record).

    An unreadable file is skipped with a warning rather than blocking every later check.
    """
    folder = f"/alerts/{model_name}/"
    latest: datetime | None = None
    for path in store.find("monitoring", dataset, ".json"):
        if folder not in path or "/" in path.split(folder, 1)[1]:
            continue  # another model's alerts, or something else kept under monitoring/
        try:
            moment = datetime.fromisoformat(json.loads(store.read_bytes(path))["as_of"])
            require_aware(moment, "as_of")
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("skipping unreadable alert record %s: %s", path, exc)
            continue
        if latest is None or moment > latest:
            latest = moment
    return latest
