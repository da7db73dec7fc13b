"""Canary secrets and the places to look for them.

A canary is a random string planted where a real secret would be (a webhook URL, a password, an
auth string). Each `*_records` function yields `(where, content)` pairs from one kind of place;
`leaks` says which canary turned up where. Finding nothing is only meaningful if the places were
searched: each source also counts what it read, so a test can assert it actually looked.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from mlflow import MlflowClient
from mlflow.entities import ViewType

Record = tuple[str, str | bytes]


def canary(kind: str) -> str:
    """A fresh secret-shaped string (letters, digits, dashes: it survives URL-encoding unchanged)."""
    return f"CANARY-{kind}-{secrets.token_hex(10)}"


@dataclass(frozen=True)
class Canaries:
    """The planted secrets by name, and the encodings they could leak in."""

    secrets: dict[str, str]
    basic_auth_pairs: dict[str, str] = field(default_factory=dict)  # name -> "user:password"

    def needles(self) -> dict[str, bytes]:
        found = {name: value.encode() for name, value in self.secrets.items()}
        for name, pair in self.basic_auth_pairs.items():  # as an Authorization header carries it
            found[f"{name} (base64)"] = base64.b64encode(pair.encode())
        return found


def leaks(canaries: Canaries, records: Iterable[Record]) -> list[str]:
    """`<canary> in <where>: ...context...` for every occurrence."""
    found = []
    needles = canaries.needles()
    for where, content in records:
        data = content.encode(errors="replace") if isinstance(content, str) else content
        for name, needle in needles.items():
            at = data.find(needle)
            if at >= 0:
                context = data[max(0, at - 80) : at + len(needle) + 40].decode(errors="replace")
                found.append(f"{name} in {where}: ...{context}...")
    return found


@dataclass
class Searched:
    """How many things each source read: an empty search must not pass for a clean one."""

    counts: dict[str, int] = field(default_factory=dict)

    def count(self, what: str, records: Iterable[Record]) -> Iterator[Record]:
        for record in records:
            self.counts[what] = self.counts.get(what, 0) + 1
            yield record


def prefect_records(api: str, auth_string: str, since: str) -> Iterator[Record]:
    """Everything the Prefect API holds that a secret could end up in, as JSON text."""
    user, _, password = auth_string.partition(":")
    with httpx.Client(base_url=api, auth=(user, password), timeout=30) as client:
        paged = ("logs", "flow_runs", "task_runs", "artifacts", "deployments", "automations", "variables")
        for collection in paged:
            offset = 0
            while True:
                response = client.post(f"/{collection}/filter", json={"limit": 200, "offset": offset})
                response.raise_for_status()
                page = response.json()
                for item in page:
                    yield f"Prefect {collection} {item.get('id', '')}", json.dumps(item)
                if len(page) < 200:
                    break
                offset += 200
        body: dict[str, Any] = {"filter": {"occurred": {"since": since}}, "limit": 50}
        response = client.post("/events/filter", json=body)
        while True:
            response.raise_for_status()
            page = response.json()
            for event in page["events"]:
                yield f"Prefect event {event['event']} {event['id']}", json.dumps(event)
            if not page.get("next_page"):
                break
            response = client.get(page["next_page"])


def mlflow_records(client: MlflowClient) -> Iterator[Record]:
    """Experiments, runs (params, tags, metrics, inputs), logged models, registered models, versions."""
    experiments = client.search_experiments(view_type=ViewType.ALL)
    ids = [e.experiment_id for e in experiments]
    for experiment in experiments:
        yield f"MLflow experiment {experiment.name}", repr(experiment)
    for run in client.search_runs(ids, run_view_type=ViewType.ALL, max_results=1000):
        yield f"MLflow run {run.info.run_id}", json.dumps(run.to_dictionary(), default=str)
        yield f"MLflow run {run.info.run_id} inputs", repr(run.inputs)
    for model in client.search_logged_models(experiment_ids=ids):
        yield f"MLflow logged model {model.model_id}", json.dumps(model.to_dictionary(), default=str)
    for registered in client.search_registered_models():
        yield f"MLflow registered model {registered.name}", repr(registered)
        for version in client.search_model_versions(f"name = '{registered.name}'"):
            yield f"MLflow model version {registered.name}/{version.version}", repr(version)


def file_records(root: Path) -> Iterator[Record]:
    """The bytes of every file under `root` (databases and their WAL files included)."""
    for path in sorted(root.rglob("*")):
        if path.is_file():
            yield f"file {path.relative_to(root)}", path.read_bytes()
