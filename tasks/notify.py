"""Notify: the drift event that starts retraining, and an optional message to people.

Called from inside a task (tasks/monitor.py `raise_alert`), so they log to that run.

The event is Prefect's: `driftloop.drift.detected` on the resource `driftloop.model.<name>`. The
training deployment has a trigger on exactly that (flows/deployments.py), so detection and
retraining are decoupled and visible in the Prefect UI's event feed.

People are told through Apprise when DRIFTLOOP_ALERT_URLS (comma-separated Apprise URLs: a
webhook, Slack, e-mail, ...) is set. Those URLs hold secrets: they are never logged, never put in
an event, a parameter, a tag or a report. Apprise itself logs them (whole at DEBUG, partly masked
at ERROR when it cannot parse one) and urllib3 logs the request path at DEBUG, so their records
are dropped while a message is sent; our own lines name a destination only by its position and
scheme (checked by tests/reliability/test_exposure.py).
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact
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


def alert_urls() -> list[str]:
    """The Apprise URLs in DRIFTLOOP_ALERT_URLS. Secrets: never log, store or return them elsewhere."""
    return [u.strip() for u in os.environ.get(ALERT_URLS_ENV, "").split(",") if u.strip()]


def destination_label(number: int, total: int, url: str) -> str:
    """How a log line may name a destination: its position and scheme, nothing of the rest.

    Host, path, user, password and query can all be the secret part (`slack://T/B/token`,
    `json://host/<webhook token>`, `mailto://user:pass@host`).
    """
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    return f"destination {number} of {total} ({scheme if re.fullmatch(r'[a-z][a-z0-9+.-]{0,19}', scheme) else '?'})"


class _DropRecords(logging.Filter):
    """Drops every record (or, with `thread`, those logged from that thread)."""

    def __init__(self, thread: int | None = None) -> None:
        super().__init__()
        self.thread = thread

    def filter(self, record: logging.LogRecord) -> bool:
        return self.thread is not None and record.thread != self.thread


@contextmanager
def _transport_logs_dropped() -> Iterator[None]:
    """Silence Apprise's loggers, and the HTTP libraries' records from this thread, while sending."""
    this_thread = threading.get_ident()
    import apprise  # noqa: F401  (imported first: their loggers must exist to be muted)
    import requests  # noqa: F401

    muted: list[tuple[logging.Logger, logging.Filter]] = []
    for name, found in list(logging.root.manager.loggerDict.items()):
        if not isinstance(found, logging.Logger):
            continue
        if name == "apprise" or name.startswith("apprise."):
            muted.append((found, _DropRecords()))
        elif name.split(".", 1)[0] in {"urllib3", "requests", "httpx", "httpcore"}:
            muted.append((found, _DropRecords(this_thread)))
    for logger, drop in muted:
        logger.addFilter(drop)
    try:
        yield
    finally:
        for logger, drop in muted:
            logger.removeFilter(drop)


def notify_people(title: str, body: str) -> int:
    """Send `body` to every Apprise URL in DRIFTLOOP_ALERT_URLS; returns how many were notified.

    One destination at a time, so each gets its own line in the run's log; a failure never
    raises (the drift event has already gone out) and never shows the URL.
    """
    urls = alert_urls()
    logger = get_run_logger()
    if not urls:
        logger.info("no %s set: nobody to notify", ALERT_URLS_ENV)
        return 0
    delivered = 0
    for number, url in enumerate(urls, start=1):
        with _transport_logs_dropped():
            outcome = _send(url, title, body)
        if outcome == "delivered":
            delivered += 1
            logger.info("alert %s: %s", destination_label(number, len(urls), url), outcome)
        else:
            logger.warning("alert %s: %s", destination_label(number, len(urls), url), outcome)
    logger.info("alert sent to %d of %d destination(s)", delivered, len(urls))
    return delivered


def _send(url: str, title: str, body: str) -> str:
    import apprise

    sender = apprise.Apprise()
    try:
        if not sender.add(url):
            return "NOT delivered: not a URL Apprise can use"
        return "delivered" if sender.notify(title=title, body=body) else "NOT delivered"
    except Exception as error:  # its message may hold the URL: name the type only
        return f"NOT delivered ({type(error).__name__})"


def publish_markdown(markdown: str, key: str, description: str) -> bool:
    """A Prefect markdown artifact, from a run or from a plain command; False when there is no Prefect.

    A plain command (the `driftloop` CLI) publishes only to a configured server, never to a
    temporary one it would have to start, and a Prefect outage must not undo what it did: the
    registry and the history already hold it, and the next flow run publishes again.
    """
    from prefect.context import get_run_context
    from prefect.exceptions import MissingContextError
    from prefect.settings import PREFECT_API_URL

    try:
        get_run_context()
    except MissingContextError:
        if not PREFECT_API_URL.value():
            return False
        try:
            create_markdown_artifact(markdown, key=key, description=description)
        except Exception as error:  # the server is down: said once, not raised
            logging.getLogger(__name__).warning("the Prefect artifact %s was not published: %s", key, error)
            return False
        return True
    create_markdown_artifact(markdown, key=key, description=description)
    return True
