"""The registry's vocabulary: alias and tag names, and a version as driftloop reads it.

No MLflow import: the quick readers (`driftloop status`, tasks/registry_view.py) use it too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

CHAMPION = "champion"
PREVIOUS = "previous-champion"

# Version tags, one namespace.
TAG_DECISION = "driftloop.decision"  # pending | promoted | rejected | superseded | rolled_back
TAG_DECISION_REASON = "driftloop.decision_reason"
TAG_DECIDED_AT = "driftloop.decided_at"
TAG_COMPARED_WITH = "driftloop.compared_with_version"
TAG_REPLACED = "driftloop.replaced_version"
TAG_BEST_PARAMS = "driftloop.best_params"
TAG_GATE_PASSED = "driftloop.gate_passed"
TAG_IDEMPOTENCY_KEY = "driftloop.idempotency_key"  # same data, config and code (tasks/lineage.py)
TAG_FLOW_RUN = "prefect.flow_run_id"  # on MLflow runs: the Prefect flow run that made them
TAG_VERSION = "driftloop.version"  # on MLflow runs: the version registered from them, if any
TAG_FITTED_UNTIL = "driftloop.fitted_until"  # on versions refitted after the gate: the end of what they saw
PROMOTING = "promoting"  # a TAG_DECISION value: registered, aliases not yet moved (recovery finishes it)


@dataclass(frozen=True)
class VersionRef:
    name: str
    version: str
    run_id: str | None
    tags: dict[str, str]

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    @property
    def best_params(self) -> dict[str, Any]:
        raw = self.tags.get(TAG_BEST_PARAMS)
        return json.loads(raw) if raw else {}
