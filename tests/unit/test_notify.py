"""People are told through Apprise: a real JSON webhook on loopback receives the alert."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from prefect.logging import disable_run_logger

from tasks.notify import ALERT_URLS_ENV, artifact_key, model_resource, notify_people


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, object]]]]:
    received: list[dict[str, object]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:  # keep the test output quiet
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"json://127.0.0.1:{server.server_port}/alerts", received
    server.shutdown()


def test_alert_reaches_every_configured_webhook(webhook, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    url, received = webhook
    monkeypatch.setenv(ALERT_URLS_ENV, f"{url}, ")

    with disable_run_logger():
        delivered = notify_people("driftloop: drift on m", "window 2013-06\nshare 0.35")

    assert delivered == 1
    assert len(received) == 1
    assert received[0]["title"] == "driftloop: drift on m"
    assert "share 0.35" in str(received[0]["message"])


def test_nobody_to_tell_is_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ALERT_URLS_ENV, raising=False)

    with disable_run_logger():
        assert notify_people("t", "b") == 0


def test_names_follow_prefect_rules() -> None:
    assert artifact_key("drift-report", "Flights_Late.v2") == "drift-report-flights-late-v2"
    assert model_resource("m")["prefect.resource.id"] == "driftloop.model.m"
