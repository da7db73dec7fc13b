"""Notify: the drift event that starts retraining, and an optional message to people.

Called from inside a task (tasks/monitor.py `raise_alert`), so they log to that run.

The event is Prefect's: `driftloop.drift.detected` on the resource `driftloop.model.<name>`. The
training deployment has a trigger on exactly that (flows/deployments.py), so detection and
retraining are decoupled and visible in the Prefect UI's event feed.

People are told through Apprise when DRIFTLOOP_ALERT_URLS (comma-separated Apprise URLs: a
webhook, Slack, e-mail, ...) is set. Those URLs hold secrets: they are never logged, never put in
an event, a parameter, a tag or a report.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from prefect import get_run_logger
from prefect.events import emit_event

DRIFT_EVENT = "driftloop.drift.detected"
ALERT_URLS_ENV = "DRIFTLOOP_ALERT_URLS"


def artifact_key(kind: str, name: str) -> str:
    """A Prefect artifact key (lowercase letters, digits and dashes only), e.g. `gate-<model>`."""
    return f"{kind}-" + "".join(ch if ch.isalnum() else "-" for ch in name.lower())


def model_resource(model_name: str) -> dict[str, str]:
    return {"prefect.resource.id": f"driftloop.model.{model_name}", "prefect.resource.name": model_name}


def emit_drift_event(model_name: str, payload: dict[str, Any]) -> tuple[str, datetime] | None:
    """Emit the event the training deployment's trigger waits for; returns its id and time."""
    event = emit_event(event=DRIFT_EVENT, resource=model_resource(model_name), payload=payload)
    if event is None:  # events are disabled in this process: nothing will be triggered
        get_run_logger().warning("%s for %s was NOT emitted: events are disabled here", DRIFT_EVENT, model_name)
        return None
    get_run_logger().info("emitted %s for %s (event %s)", DRIFT_EVENT, model_name, event.id)
    return str(event.id), event.occurred


def notify_people(title: str, body: str) -> int:
    """Send `body` to every Apprise URL in DRIFTLOOP_ALERT_URLS; returns how many were notified."""
    urls = [u.strip() for u in os.environ.get(ALERT_URLS_ENV, "").split(",") if u.strip()]
    logger = get_run_logger()
    if not urls:
        logger.info("no %s set: nobody to notify", ALERT_URLS_ENV)
        return 0
    import apprise

    sender = apprise.Apprise()
    for url in urls:
        sender.add(url)
    delivered = bool(sender.notify(title=title, body=body))
    logger.info("alert sent to %d destination(s): %s", len(urls), "delivered" if delivered else "NOT delivered")
    return len(urls) if delivered else 0
