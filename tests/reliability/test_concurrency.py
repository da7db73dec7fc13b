"""Two retrainings at once, as two processes on one registry: one decision, no lost update.

Both start from the same champion. On the same data they share an idempotency key: one version
is registered, the other run is recorded as superseded. On different data both may pass their
gate; the second to decide is judged again against the first (now champion) on rows neither was
fitted on, so the better model on those rows wins, and no two promotions come from the same comparison. SQLite is shared
by both processes: no "database is locked" may escape.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import mlflow
from mlflow import MlflowClient
from sklearn.metrics import roc_auc_score

from tasks.artifacts import load_version
from tasks.ingest import load_bundled
from tasks.model import features_and_target, predict_scores
from tasks.registry import CHAMPION, TAG_COMPARED_WITH, TAG_DECISION, TAG_DECISION_REASON
from tasks.settings import TimeWindow, load_config
from tasks.validate import check_frame
from tests.reliability.conftest import DATASET, MODEL, World
from tests.reliability.invariants import assert_invariants

BASELINE = ("--start", "2013-01-01", "--end", "2013-02-01", "--reason", "baseline")
LEFT = ("--start", "2013-01-01", "--end", "2013-03-01", "--reason", "left")
RIGHT = ("--start", "2013-01-15", "--end", "2013-03-15", "--reason", "right")
# Fitted by neither run: LEFT's window ends here, RIGHT holds these days out as its holdout.
UNSEEN_BY_BOTH = TimeWindow(start="2013-03-01", end="2013-03-15")


def registry(world: World) -> MlflowClient:
    uri = world.stores.mlflow_tracking_uri
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def together(world: World, *runs: tuple[str, ...]) -> list[str]:
    """Start every run at once, wait for all; returns their logs.

    Each run gets one OpenMP thread, as if on a worker of its own. Two runs each spinning two
    OpenMP threads on two cores oversubscribe them: 363-887 s per test was measured, against ~135 s.
    """
    world = replace(world, env={**world.env, "OMP_NUM_THREADS": "1"})
    processes = [world.start_training(*args, log_name=f"run-{i}") for i, args in enumerate(runs)]
    codes = [p.wait(timeout=900) for p in processes]
    logs = [(world.home / f"run-{i}.log").read_text() for i in range(len(runs))]
    for code, log in zip(codes, logs, strict=True):
        assert code == 0, log[-4000:]
        assert "database is locked" not in log
    return logs


def score_on_unseen_rows(world: World, version: str) -> float:
    """A version's ROC AUC on the days neither concurrent run was fitted on, computed here, not by the gate."""
    config = load_config(world.config_path)
    rows, failures = check_frame(config, load_bundled(config, UNSEEN_BY_BOTH), "unseen")
    assert failures == []
    features, target = features_and_target(config, rows)
    uri = world.stores.mlflow_tracking_uri
    before = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())
    mlflow.set_tracking_uri(uri)  # the download resolves models:/ through the global URIs
    mlflow.set_registry_uri(uri)
    try:
        model = load_version(MODEL, version, registry(world))
    finally:
        mlflow.set_tracking_uri(before[0])
        mlflow.set_registry_uri(before[1])
    return float(roc_auc_score(target, predict_scores(model, features, "binary")))


def trained(world: World, args: tuple[str, ...]) -> None:
    done = world.train(*args)
    assert done.returncode == 0, done.stderr[-4000:]


def test_two_runs_on_the_same_data_register_one_version(world: World) -> None:
    trained(world, BASELINE)
    same = ("--start", "2013-01-01", "--end", "2013-03-01", "--reason", "twin")

    logs = together(world, same, same)

    versions = registry(world).search_model_versions(f"name = '{MODEL}'")
    assert len(versions) == 2  # the baseline and one version for the twins' key
    experiment = registry(world).get_experiment_by_name(MODEL)
    twins = registry(world).search_runs([experiment.experiment_id], "tags.`driftloop.reason` = 'twin'")
    if len(twins) == 1:  # one process started after the other had decided: it found that decision
        assert any("already trained from the same data, config and code" in log for log in logs)
    else:  # both trained; the slower one to decide registered nothing
        loser = next(r for r in twins if r.data.tags[TAG_DECISION] == "superseded")
        assert "from the same data, config and code" in loser.data.tags[TAG_DECISION_REASON]
        assert "driftloop.version" not in loser.data.tags
    assert_invariants(world.stores, MODEL, DATASET, prefect_api=world.api)


def test_two_runs_on_different_data_promote_at_most_once_per_comparison(world: World) -> None:
    trained(world, BASELINE)
    client = registry(world)
    baseline = str(client.get_model_version_by_alias(MODEL, CHAMPION).version)

    together(world, LEFT, RIGHT)

    versions = client.search_model_versions(f"name = '{MODEL}'")
    assert len(versions) == 3
    promoted = [v for v in versions if v.tags[TAG_DECISION] == "promoted"]
    # at most one promotion per comparison: no two promoted versions beat the same champion
    comparisons = Counter(v.tags[TAG_COMPARED_WITH] for v in promoted)
    assert all(count == 1 for count in comparisons.values()), comparisons
    champion = str(client.get_model_version_by_alias(MODEL, CHAMPION).version)
    new = [v for v in versions if str(v.version) != baseline]
    unseen = {str(v.version): score_on_unseen_rows(world, str(v.version)) for v in new}
    rejudged = 0
    for version in new:
        decision, reason = version.tags[TAG_DECISION], version.tags[TAG_DECISION_REASON]
        assert decision in {"promoted", "rejected", "superseded"}
        if "judged again" in reason:
            rejudged += 1
            # the later one met the earlier one's promotion and was compared with it, not with the baseline
            other = next(str(v.version) for v in new if v.version != version.version)
            assert version.tags[TAG_COMPARED_WITH] == other
            assert (decision == "promoted") == (champion == str(version.version))
            # ...on rows neither saw: it wins only by being better there, and loses when clearly worse
            mine, theirs = unseen[str(version.version)], unseen[other]
            if decision == "promoted":
                assert mine > theirs, (unseen, reason)
            elif mine < theirs - 0.005:
                assert decision != "promoted", (unseen, reason)  # re-judged and lost: superseded
    if rejudged and champion in unseen:  # the two met: the champion is the better on unseen rows, or tied
        margin = load_config(world.config_path).gate.min_improvement  # a gain below it never promotes
        assert unseen[champion] >= max(unseen.values()) - margin, (unseen, champion)
    assert_invariants(world.stores, MODEL, DATASET, prefect_api=world.api)
