"""Training budgets for tests that need a run to happen, not to excel."""

from __future__ import annotations

from typing import Any


def with_small_budget(config: dict[str, Any]) -> dict[str, Any]:
    """A config (as read from YAML) at the budget of a test that needs training to happen, not to excel.

    Three trials, and explanations on a small sample: the reliability and end-to-end tests check
    what a run leaves behind and decides, and every explanation file is still written.
    """
    config["tuning"].update({"n_trials": 3, "timeout_seconds": 120})
    config["explanations"] = {**config.get("explanations", {}), "sample_rows": 1000, "n_repeats": 2, "top_features": 1}
    return config
