"""The five "nothing lost" invariants, checked against the real stores after every fault.

1. `champion` points to exactly one version whose gate passed, whose run finished, whose files
   match the hashes recorded at training (model and run artifacts), and which loads.
2. Every landed batch ends in exactly one place: processed, or quarantine with a reason;
   byte-identical (its name starts with the SHA-256 of its bytes).
3. Every trained candidate (an MLflow run that logged a model) has exactly one final decision;
   no version is left without one (`pending`, `promoting`).
4. At most one version per idempotency key (same data, config and code).
5. Nothing is left running in Prefect, MLflow or Optuna.
6. The promotion history is intact (its hash chain verifies), records each version's decision
   exactly once, and ends where the registry is: its last entry's champion is the champion.

`check` returns the list of violations (empty when all hold), so a failing test shows all of them.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field

import httpx
import mlflow
import optuna
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from tasks.artifacts import TAG_RUN_MANIFEST, UntrustedModelError, differences, load_version, run_manifest
from tasks.audit import AuditLog
from tasks.registry import CHAMPION, TAG_DECISION, TAG_GATE_PASSED, TAG_IDEMPOTENCY_KEY, TAG_VERSION
from tasks.stores import DataStore, Stores
from tasks.tune import make_storage

FINAL_VERSION_DECISIONS = {"promoted", "rejected", "superseded", "rolled_back"}
FINAL_RUN_DECISIONS = {"promoted", "rejected", "superseded", "abandoned"}
TAG_MODEL_LOGGED = "driftloop.model_sha256"


@dataclass
class Checked:
    """What was checked, so the closing note can count it."""

    violations: list[str] = field(default_factory=list)
    checks: int = 0

    def expect(self, condition: bool, violation: str) -> None:
        self.checks += 1
        if not condition:
            self.violations.append(violation)


def check(stores: Stores, model_name: str, dataset: str, prefect_api: str | None = None) -> Checked:
    client = MlflowClient(tracking_uri=stores.mlflow_tracking_uri, registry_uri=stores.mlflow_tracking_uri)
    mlflow.set_tracking_uri(stores.mlflow_tracking_uri)  # `models:/` downloads resolve through these
    mlflow.set_registry_uri(stores.mlflow_tracking_uri)
    result = Checked()
    champion_invariant(client, model_name, result)
    batches_invariant(DataStore(stores.data_uri), dataset, result)
    decisions_invariant(client, model_name, result)
    nothing_running(client, stores.optuna_storage, prefect_api, result)
    history_invariant(client, AuditLog(stores.audit_dir, model_name), result)
    return result


def assert_invariants(stores: Stores, model_name: str, dataset: str, prefect_api: str | None = None) -> int:
    """Check all six; fail with every violation listed. Returns how many checks ran."""
    result = check(stores, model_name, dataset, prefect_api)
    assert not result.violations, "invariants violated:\n  " + "\n  ".join(result.violations)
    return result.checks


def _versions(client: MlflowClient, model_name: str) -> list:
    if not client.search_registered_models(filter_string=f"name = '{model_name}'"):
        return []
    return list(client.search_model_versions(f"name = '{model_name}'"))


def champion_invariant(client: MlflowClient, model_name: str, result: Checked) -> None:
    try:
        champion = client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException:
        result.checks += 1  # no champion is a valid state (nothing promoted yet)
        return
    name = f"champion {model_name}/{champion.version}"
    result.expect(champion.tags.get(TAG_DECISION) == "promoted", f"{name}: decision {champion.tags.get(TAG_DECISION)}")
    result.expect(champion.tags.get(TAG_GATE_PASSED) == "true", f"{name}: gate passed is not recorded as true")
    run = client.get_run(champion.run_id)
    result.expect(run.info.status == "FINISHED", f"{name}: its run is {run.info.status}")
    recorded = json.loads(champion.tags.get(TAG_RUN_MANIFEST, "{}"))
    result.expect(bool(recorded), f"{name}: no recorded hashes of its run's artifacts")
    found = run_manifest(champion.run_id, client)
    problems = differences(recorded, {path: digest for path, digest in found.items() if path in recorded})
    result.expect(not problems, f"{name}: run artifacts differ from the recorded hashes: {problems}")
    try:
        model = load_version(model_name, str(champion.version), client)
        result.expect(hasattr(model, "predict"), f"{name}: loaded object cannot predict")
    except UntrustedModelError as error:
        result.expect(False, f"{name}: does not load: {error}")


def batches_invariant(store: DataStore, dataset: str, result: Checked) -> None:
    result.expect(
        store.listing("landed", dataset) == [], f"batches left in landed/: {store.listing('landed', dataset)}"
    )
    processed = {p.rsplit("/", 1)[-1]: p for p in store.listing("processed", dataset)}
    quarantined = {
        p.rsplit("/", 1)[-1]: p for p in store.listing("quarantine", dataset) if not p.endswith(".reason.json")
    }
    reasons = {p.rsplit("/", 1)[-1].removesuffix(".reason.json") for p in store.listing("quarantine", dataset)}
    both = processed.keys() & quarantined.keys()
    result.expect(not both, f"batches both processed and quarantined: {sorted(both)}")
    for name, path in {**processed, **quarantined}.items():
        digest = hashlib.sha256(store.read_bytes(path)).hexdigest()
        result.expect(name.startswith(digest[:16]), f"{path}: bytes changed (sha256 {digest[:16]})")
    for name in quarantined:
        result.expect(name in reasons, f"quarantined {name} has no reason file")


def decisions_invariant(client: MlflowClient, model_name: str, result: Checked) -> None:
    versions = _versions(client, model_name)
    for version in versions:
        decision = version.tags.get(TAG_DECISION)
        where = f"{model_name}/{version.version}"
        result.expect(decision in FINAL_VERSION_DECISIONS, f"{where}: decision {decision!r} is not final")
        result.expect(version.run_id is not None, f"{where}: no run")
    keys = Counter(v.tags.get(TAG_IDEMPOTENCY_KEY) for v in versions)
    result.expect(None not in keys, "a version has no idempotency key")
    repeated = {key: count for key, count in keys.items() if key is not None and count > 1}
    result.expect(not repeated, f"idempotency keys with more than one version: {repeated}")
    experiment = client.get_experiment_by_name(model_name)
    if experiment is None:
        return
    registered = {str(v.version) for v in versions}
    for run in client.search_runs([experiment.experiment_id], filter_string=f"tags.`{TAG_MODEL_LOGGED}` != ''"):
        decision = run.data.tags.get(TAG_DECISION)
        where = f"run {run.info.run_id[:8]}"
        result.expect(decision in FINAL_RUN_DECISIONS, f"{where}: logged a model but its decision is {decision!r}")
        version = run.data.tags.get(TAG_VERSION)
        if version is not None:
            result.expect(version in registered, f"{where}: names version {version}, which does not exist")


def nothing_running(client: MlflowClient, optuna_storage: str, prefect_api: str | None, result: Checked) -> None:
    experiments = [e.experiment_id for e in client.search_experiments()]
    running = client.search_runs(experiments, filter_string="attributes.status = 'RUNNING'") if experiments else []
    result.expect(not running, f"MLflow runs still RUNNING: {[r.info.run_id[:8] for r in running]}")
    storage = make_storage(optuna_storage)
    storage = optuna.storages.get_storage(storage) if isinstance(storage, str) else storage
    stuck = [
        f"{study.study_name}#{trial.number}"
        for study in storage.get_all_studies()
        for trial in storage.get_all_trials(study._study_id, deepcopy=False)
        if trial.state == optuna.trial.TrialState.RUNNING
    ]
    result.expect(not stuck, f"Optuna trials still RUNNING: {stuck}")
    if prefect_api is not None:
        body = {"flow_runs": {"state": {"type": {"any_": ["RUNNING", "PENDING", "CANCELLING"]}}}}
        runs = httpx.post(f"{prefect_api}/flow_runs/filter", json=body, timeout=10).json()
        result.expect(not runs, f"Prefect flow runs still active: {[(r['name'], r['state_type']) for r in runs]}")


def history_invariant(client: MlflowClient, log: AuditLog, result: Checked) -> None:
    entries = log.entries()
    result.expect(not log.verify(), f"promotion history broken: {log.verify()}")
    decided = Counter(e.version for e in entries if e.event in {"promoted", "rejected", "superseded"})
    for version in _versions(client, log.model):
        if version.tags.get(TAG_DECISION) in FINAL_VERSION_DECISIONS:
            count = decided[str(version.version)]
            result.expect(count == 1, f"version {version.version}: {count} decisions in the history (expected 1)")
    try:
        champion: str | None = str(client.get_model_version_by_alias(log.model, CHAMPION).version)
    except MlflowException:
        champion = None
    last = entries[-1].champion_after if entries else None
    result.expect(last == champion, f"history ends with champion {last}, the registry says {champion}")
