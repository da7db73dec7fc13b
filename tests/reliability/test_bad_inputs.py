"""Bad inputs from the committed corpus (tests/reliability/corpus, README.md there) through the real flows.

For every bad file: the training flow stops with a specific error naming the file, the column and
the rule; the batch sits in quarantine/, byte-identical, next to a reason naming the same failure,
and nowhere else (neither landed/ nor processed/); nothing is trained and the registry is as it
was. Afterwards the monitoring flow says "insufficient data" instead of crashing, also when the
inference log holds empty and NaN-flooded columns.

Each case runs the training flow in a driftloop home of its own (a rejected run stops at
validation, so a case costs about a second). One champion, trained once for the module on the one
corpus file that passes, is the incumbent the bad batches must leave alone.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from prefect.logging import disable_run_logger
from prefect.testing.utilities import prefect_test_harness

from flows.monitoring import monitoring
from flows.scoring import scoring
from flows.training import training
from tasks.drift import ALL_NULL_METHOD, is_drifted
from tasks.inference_log import InferenceLog
from tasks.ingest import BatchReadError, parse_batch
from tasks.promote import Decision
from tasks.registry import CHAMPION, connect, find_champion
from tasks.score import score
from tasks.settings import TrainingConfig, load_config
from tasks.stores import DataStore, Stores
from tasks.validate import BatchRejected, Failure
from tests.reliability.invariants import assert_invariants

pytestmark = pytest.mark.flow

CORPUS = Path(__file__).resolve().parent / "corpus"
DATASET = "flights"  # configs/flights.yaml `name`: the folder under landed/, quarantine/, processed/
BATCH_AREAS = ("landed", "quarantine", "processed")
MIN_ROWS = 50  # the corpus files hold ~300 rows: a whole file passes the row count, one row does not
KEY = "time_hour,carrier,flight,origin"
ROW_COUNT = "expect_table_row_count_to_be_between"
MEAN = "expect_column_mean_to_be_between"
PASSES = "extra_column.csv"  # the one corpus file the contract accepts (strict=False: extra columns are ignored)
CLEAN_WEEK_AS_OF = datetime(2013, 1, 8, tzinfo=UTC)  # the corpus week is 2013-01-01..07


@dataclass(frozen=True)
class Expected:
    """One failure a case must produce; `rule` is a regular expression when `pattern` is set."""

    column: str | None
    rule: str
    failing_rows: int | None
    pattern: bool = False

    def matches(self, failure: Failure) -> bool:
        rule = re.fullmatch(self.rule, failure.rule) if self.pattern else self.rule == failure.rule
        return bool(rule) and (failure.column, failure.failing_rows) == (self.column, self.failing_rows)


@dataclass(frozen=True)
class Case:
    file: str
    failures: list[Expected] = field(default_factory=list)  # the same when scoring, where labels are optional

    @property
    def data(self) -> bytes:
        return (CORPUS / self.file).read_bytes()

    @property
    def digest(self) -> str:
        return sha256(self.data)


REJECTED = [
    Case("empty.csv", [Expected(None, "readable: empty file (0 bytes)", None)]),
    Case(
        "truncated.csv",
        [Expected(None, r"readable: malformed CSV: .*EOF inside string starting at row 296", None, pattern=True)],
    ),
    Case(  # pandas would pad the short last row with nulls; the reader counts its fields first
        "truncated_row.csv",
        [
            Expected(
                None,
                "readable: truncated: the last row (line 297) has 27 of 30 fields and the file does not end "
                "with a newline: it was cut off",
                None,
            )
        ],
    ),
    Case(
        "truncated.parquet",
        [Expected(None, r"readable: unreadable parquet: .*magic bytes not found in footer.*", None, pattern=True)],
    ),
    Case("utf16.csv", [Expected(None, "readable: not UTF-8 text: invalid start byte at byte 0", None)]),
    Case("latin1.csv", [Expected(None, "readable: not UTF-8 text: invalid start byte at byte 16441", None)]),
    Case("missing_column.parquet", [Expected("pressure", "column is missing", None)]),
    Case("renamed_column.csv", [Expected("dest", "column is missing", None)]),
    Case("dtype_change.csv", [Expected("temp", "coerce_dtype('float64')", 293)]),
    Case("duplicate_rows.parquet", [Expected(KEY, "expect_compound_columns_to_be_unique", 20)]),
    Case("out_of_range.csv", [Expected("hour", "less_than_or_equal_to(23.0)", 5)]),
    Case("nan_flood.parquet", [Expected("temp", "max_null_ratio(0.05)", 237)]),
    Case(
        "inf_flood.parquet",
        [Expected("wind_speed", "less_than_or_equal_to(100.0)", 148), Expected("wind_speed", "finite", 148)],
    ),
    Case("all_null_column.parquet", [Expected("dest", "not_nullable", 296)]),
    Case("one_row.csv", [Expected(None, ROW_COUNT, None), Expected("late", MEAN, None)]),
]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- fixtures and helpers --------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def prefect_harness() -> Iterator[None]:
    with prefect_test_harness(server_startup_timeout=120):
        yield


def changed(config: TrainingConfig, **sections: dict[str, Any]) -> TrainingConfig:
    """A copy of `config` with some sections' fields replaced, validated like a loaded file."""
    raw = config.model_dump(mode="json")
    for section, fields in sections.items():
        raw[section] = {**raw[section], **fields}
    return TrainingConfig.model_validate(raw)


# One point, not a range: a small model that still learns something from ~170 training rows
# (the shipped space can draw min_samples_leaf above half of them: a constant predictor).
SMALL_MODEL = {
    "max_iter": {"type": "int", "low": 30, "high": 30},
    "max_leaf_nodes": {"type": "int", "low": 8, "high": 8},
    "min_samples_leaf": {"type": "int", "low": 10, "high": 10},
    "learning_rate": {"type": "float", "low": 0.1, "high": 0.1},
}


@pytest.fixture(scope="module")
def corpus_config(repo_root: Path) -> TrainingConfig:
    """The shipped flights contract, reading files, sized for ~300-row batches and a one-trial search."""
    return changed(
        load_config(repo_root / "configs" / "flights.yaml"),
        source={"kind": "files", "path": str(CORPUS / PASSES)},
        validation={"min_rows": MIN_ROWS},
        split={"validation_days": 1, "holdout_days": 2},  # a one-week batch: 4 days train, 1 validation, 2 holdout
        tuning={"n_trials": 1, "timeout_seconds": 60, "search_space": SMALL_MODEL},
        gate={"min_metric": None},  # ~85 holdout rows judge nothing; the first model is the champion
        # ...and measure no airport's fairness (300 rows a group): a bounded gap would be unmeasurable,
        # which the gate rejects; these tests are about bad input, so the bound is off here.
        fairness={"bounds": {}},
    )


def reading(config: TrainingConfig, path: Path) -> TrainingConfig:
    return changed(config, source={"kind": "files", "path": str(path)})


def incoming(folder: Path, *files: str) -> Path:
    """A fresh folder holding copies of corpus files, as a producer would drop them."""
    folder.mkdir(parents=True)
    for name in files:
        shutil.copyfile(CORPUS / name, folder / name)
    return folder


def own_home(patch: pytest.MonkeyPatch, home: Path) -> None:
    patch.setenv("DRIFTLOOP_HOME", str(home))
    for override in ("DATA_URI", "MLFLOW_TRACKING_URI", "MLFLOW_ARTIFACT_ROOT", "OPTUNA_STORAGE", "LOCK_DIR"):
        patch.delenv(f"DRIFTLOOP_{override}", raising=False)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    own_home(monkeypatch, tmp_path / "home")
    return tmp_path / "home"


@dataclass(frozen=True)
class Champion:
    home: Path
    decision: Decision


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory, corpus_config: TrainingConfig) -> Iterator[Champion]:
    """A home whose registry holds one champion, trained on the corpus file that passes."""
    root = tmp_path_factory.mktemp("champion")
    with pytest.MonkeyPatch.context() as patch:
        own_home(patch, root / "home")
        decision = training(config=reading(corpus_config, incoming(root / "incoming", PASSES)))
        assert decision.outcome == "promoted", decision
        yield Champion(root / "home", decision)


def data_store() -> DataStore:
    return DataStore(Stores.from_env().data_uri)


def copies(digest: str) -> list[str]:
    """Every batch file under landed/, quarantine/ and processed/ whose bytes have this SHA-256."""
    store = data_store()
    return [
        path
        for area in BATCH_AREAS
        for path in store.find(area, DATASET)
        if not path.endswith(".reason.json") and sha256(store.read_bytes(path)) == digest
    ]


def assert_failures(failures: list[Failure], case: Case) -> None:
    """Exactly the case's failures, each naming the case's file."""
    expected = case.failures
    assert {f.file for f in failures} == {case.file}
    got = [(f.column, f.rule, f.failing_rows) for f in failures]
    assert len(failures) == len(expected), got
    assert all(any(e.matches(f) for f in failures) for e in expected), got


def assert_quarantined_once(case: Case) -> str:
    """The batch is in quarantine/ byte-identical, once, and nowhere else; its reason names the failure."""
    store = data_store()
    name = f"{case.digest[:16]}-{case.file}"
    [copy] = copies(case.digest)
    assert copy == f"{store.root}/quarantine/{DATASET}/{name}"
    reason = json.loads(store.read_bytes(f"{copy}.reason.json"))
    assert reason["file"] == case.file
    assert reason["sha256"] == case.digest
    assert reason["landed_path"] == f"{store.root}/landed/{DATASET}/{name}"
    assert datetime.fromisoformat(reason["rejected_at"]).tzinfo is not None
    assert_failures([Failure(**failure) for failure in reason["failures"]], case)
    return copy


def registry() -> MlflowClient:
    uri = Stores.from_env().mlflow_tracking_uri
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def assert_nothing_trained(model_name: str) -> None:
    """No registered model, no version, and no MLflow run in the model's experiment."""
    client = registry()
    assert client.search_registered_models() == []
    assert client.search_model_versions() == []
    experiment = client.get_experiment_by_name(model_name)
    assert experiment is None or client.search_runs([experiment.experiment_id]) == []


def registry_state(model_name: str) -> tuple[list[str], dict[str, str]]:
    """(every version number, the aliases) of the registered model."""
    client = registry()
    versions = sorted(str(v.version) for v in client.search_model_versions(f"name='{model_name}'"))
    return versions, {alias: str(v) for alias, v in client.get_registered_model(model_name).aliases.items()}


# --- one bad file per run, each in a home of its own ---------------------------------------------


@pytest.mark.parametrize("case", REJECTED, ids=lambda case: case.file)
def test_bad_batch_is_quarantined_with_a_specific_error_and_nothing_is_trained(
    case: Case, corpus_config: TrainingConfig, home: Path, tmp_path: Path
) -> None:
    config = reading(corpus_config, incoming(tmp_path / "incoming", case.file))

    with pytest.raises(BatchRejected) as info:
        training(config=config)

    error = info.value
    assert_failures(error.failures, case)
    message = str(error)
    assert message.startswith(f"1 batch(es) rejected and quarantined ({len(case.failures)} failure(s)):")
    for failure in error.failures:  # "<file>: column '<column>': <rule>, ..." or "<file>: table: <rule>"
        assert f"  - {failure.describe()}" in message
    copy = assert_quarantined_once(case)
    assert error.quarantined == [copy]
    assert f"  quarantined: {copy}" in message
    store = data_store()
    assert store.find("quarantine", DATASET) == [copy, f"{copy}.reason.json"]
    assert store.find("landed", DATASET) == []
    assert store.find("processed", DATASET) == []
    assert_nothing_trained(config.model_name)
    assert_invariants(Stores.from_env(), config.model_name, DATASET)


def test_missing_source_path_is_named_and_nothing_lands(
    corpus_config: TrainingConfig, home: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "incoming" / "flights-2013-01-01.csv"  # no such file: not in the corpus either

    with pytest.raises(BatchReadError) as info:
        training(config=reading(corpus_config, missing))

    assert str(info.value) == f"{missing}: source path does not exist"
    assert (info.value.path, info.value.problem) == (str(missing), "source path does not exist")
    assert all(data_store().find(area, DATASET) == [] for area in BATCH_AREAS)
    assert_nothing_trained(corpus_config.model_name)


# --- the file that passes: the extra column is allowed and ignored -------------------------------


def test_extra_column_passes_is_ignored_and_the_batch_is_processed(champion: Champion, tmp_path: Path) -> None:
    """The schema is not strict: a column the contract does not name is neither checked nor used."""
    client = registry()
    version = client.get_model_version(champion.decision.model_name, champion.decision.version)
    reference = Path(client.download_artifacts(version.run_id, "reference/reference.parquet", str(tmp_path)))
    columns = set(pd.read_parquet(reference).columns)
    assert "booking_channel" in parse_batch(PASSES, (CORPUS / PASSES).read_bytes()).columns
    assert "booking_channel" not in columns
    assert {"carrier", "dest", "temp"} <= columns
    store = data_store()
    digest = sha256((CORPUS / PASSES).read_bytes())
    assert store.find("quarantine", DATASET) == []
    assert store.find("landed", DATASET) == []  # a validated batch does not stay in landed/...
    assert copies(digest) == [f"{store.root}/processed/{DATASET}/{digest[:16]}-{PASSES}"]  # ...it moves, once


# --- the whole corpus against a champion: quarantined, champion unchanged, monitoring holds ------


def assert_each_batch_in_one_place(store: DataStore) -> None:
    """The invariant: every landed corpus file ends in exactly one place, byte-identical."""
    for case in REJECTED:
        assert_quarantined_once(case)
    digest = sha256((CORPUS / PASSES).read_bytes())
    assert copies(digest) == [f"{store.root}/processed/{DATASET}/{digest[:16]}-{PASSES}"]
    assert store.find("landed", DATASET) == []


def test_whole_corpus_leaves_the_champion_alone_and_monitoring_says_insufficient_data(
    champion: Champion, corpus_config: TrainingConfig, tmp_path: Path
) -> None:
    """One delivery holding every corpus file, the good one included, against the module's champion."""
    folder = incoming(tmp_path / "incoming", PASSES, *[case.file for case in REJECTED])
    model = corpus_config.model_name
    store = data_store()
    before = registry_state(model)
    assert before == (["1"], {CHAMPION: "1"})

    # training: every bad file quarantined, all their failures in one error, the good one processed
    with pytest.raises(BatchRejected) as trained:
        training(config=reading(corpus_config, folder))
    assert len(trained.value.quarantined) == len(REJECTED)
    assert PASSES not in str(trained.value)
    for case in REJECTED:
        assert_failures([f for f in trained.value.failures if f.file == case.file], case)
    assert_each_batch_in_one_place(store)
    assert registry_state(model) == before

    # scoring: the same rules reject the same files (labels are optional there, which spares only
    # the truncated row's lost label); the good batch is scored all the same, nothing else is logged
    with pytest.raises(BatchRejected) as scored:
        scoring(config=reading(corpus_config, folder))
    assert len(scored.value.quarantined) == len(REJECTED)
    for case in REJECTED:
        assert_failures([f for f in scored.value.failures if f.file == case.file], case)
    assert_each_batch_in_one_place(store)  # the reason now is the scoring run's
    log = InferenceLog(store, corpus_config).read(pd.Timestamp("2013-01-01", tz="UTC"), pd.Timestamp(CLEAN_WEEK_AS_OF))
    good_rows = len(parse_batch(PASSES, (CORPUS / PASSES).read_bytes()))
    assert len(log) == good_rows
    assert registry_state(model) == before

    outcome = monitoring(config=corpus_config, as_of=CLEAN_WEEK_AS_OF)

    assert outcome.status == "insufficient_data"
    assert outcome.decision.retrain is False
    assert outcome.decision.reasons == [f"insufficient data: {good_rows} current rows, at least 1000 needed"]
    assert outcome.result is not None
    assert outcome.result.rows_current == good_rows
    assert outcome.event_id is None
    assert registry_state(model) == before
    assert_invariants(Stores.from_env(), model, DATASET)


# --- monitoring on empty and flooded columns in the inference log --------------------------------

A_YEAR_LATER = pd.Timedelta(weeks=52)  # same weekdays; a window no other test writes to
DAMAGED_AS_OF = CLEAN_WEEK_AS_OF + A_YEAR_LATER.to_pytimedelta()


EMPTIED = ("dest", "pressure")  # one category, one number


def log_damaged_batch(config: TrainingConfig, batch_id: str) -> pd.DataFrame:
    """The passing batch a year later, with an empty category, an empty number and a NaN flood,
    scored by the champion and appended to the inference log as if validation had let it through."""
    frame = parse_batch(PASSES, (CORPUS / PASSES).read_bytes())
    frame["time_hour"] = pd.to_datetime(frame["time_hour"], utc=True) + A_YEAR_LATER
    frame[EMPTIED[0]] = None  # all null: categorical
    frame[EMPTIED[1]] = np.nan  # all null: numeric
    frame.loc[frame.index % 5 != 0, "temp"] = np.nan  # NaN flood: one value in five left
    stores = Stores.from_env()
    connect.fn(stores=stores, model_name=config.model_name)
    with disable_run_logger():
        score.fn(
            config=config,
            frame=frame,
            batch_id=batch_id,
            champion=find_champion.fn(model_name=config.model_name),
            stores=stores,
        )
    return frame


@pytest.mark.parametrize(
    ("min_rows", "decides"),
    [(1000, False), (100, True)],
    ids=["default-min-rows", "enough-rows-to-decide"],
)
def test_monitoring_reads_empty_columns_without_crashing(
    champion: Champion, corpus_config: TrainingConfig, min_rows: int, decides: bool
) -> None:
    logged = log_damaged_batch(corpus_config, "damaged-columns")
    config = changed(corpus_config, monitoring={"min_rows": min_rows})

    outcome = monitoring(config=config, as_of=DAMAGED_AS_OF)

    assert outcome.result is not None
    assert outcome.result.rows_current == len(logged)
    if decides:
        # the two emptied columns are drifted by definition (score 1.0); whether the check as a whole
        # is drift then depends on the share of all features, the weather of a whole week included
        empty = {c.column: c for c in outcome.result.columns if c.method == ALL_NULL_METHOD}
        assert set(empty) >= set(EMPTIED), outcome.result.columns
        assert all(c.drifted and c.score == 1.0 for c in empty.values())
        result = outcome.result
        drifted = [c for c in result.columns if is_drifted(c)]
        alone = any(np.isfinite(c.score) and c.score >= result.alone_ratio * c.threshold for c in drifted)
        prediction = result.prediction is not None and result.prediction.drifted
        assert result.performance is None  # no labels were logged: quality is not a signal here
        assert result.min_drifted is not None  # the model's calibrated share rule was applied
        implied = "drift" if len(drifted) >= result.min_drifted or alone or prediction else "no_drift"
        assert outcome.status == implied, outcome.decision.reasons
    else:
        assert outcome.status == "insufficient_data"
        assert outcome.decision.reasons == [
            f"insufficient data: {len(logged)} current rows, at least {min_rows} needed"
        ]
    scores = {c.column: c for c in outcome.result.columns}
    assert set(scores) == set(corpus_config.features.all)
    for empty in ("dest", "pressure"):  # the feature stopped arriving: the largest change there is
        assert (scores[empty].method, scores[empty].score, scores[empty].drifted) == ("all_null", 1.0, True)
    assert {"dest", "pressure"} <= {c.column for c in outcome.result.drifted_columns()}
    assert np.isfinite(scores["temp"].score)  # compared on the values that are left
    assert outcome.report_path is not None  # Evidently ran on the columns it can compare
