"""Model cards: what a person needs to trust, question or replace one registered version.

Why it exists, what it was trained on, how good and how fair it is, what it replaced, what
explains it, what it cannot do, and where it came from.

Everything in a card is read back from the stores (`gather_facts`): the version's tags, its
training run's parameters, metrics and tags, and the files the run logged (config, gate
report, slice and fairness metrics, explanations), plus the promotion history. So a card can
be regenerated at any time (`driftloop card --version N`) and never says what the registry
does not. `render_card` is pure. The card is stored three ways: as the version's description
in MLflow (a summary when the whole card is longer than MLflow's 5000 characters), as
`card/model_card.md` on the run, and as a Prefect markdown artifact.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from tasks.audit import ROLLED_BACK, AuditEntry, AuditLog
from tasks.history_store import audit_log
from tasks.registry_names import (
    CHAMPION,
    PREVIOUS,
    TAG_BEST_PARAMS,
    TAG_COMPARED_WITH,
    TAG_DECIDED_AT,
    TAG_DECISION,
    TAG_DECISION_REASON,
    TAG_FLOW_RUN,
    TAG_GATE_PASSED,
    TAG_IDEMPOTENCY_KEY,
    TAG_REPLACED,
)
from tasks.registry_view import ClientView, RegistryView
from tasks.settings import FAIRNESS_METRICS, TrainingConfig

if TYPE_CHECKING:  # `driftloop card` reads the embedded store without MLflow (tasks/registry_view.py)
    from mlflow import MlflowClient

CARD_ARTIFACT = "card/model_card.md"
DESCRIPTION_LIMIT = 5000  # MLflow's SQL stores keep at most this many characters of description

# What the run logged that a card reads; a missing file is reported in the card, never guessed.
RUN_FILES = {
    "config": "config/training.yaml",
    "gate": "gate/report.json",
    "slices": "evaluation/challenger_slices.json",
    "champion_slices": "evaluation/champion_slices.json",
    "fairness": "evaluation/challenger_fairness.json",
    "champion_fairness": "evaluation/champion_fairness.json",
    "explanation": "explanations/explanation.json",
}


@dataclass(frozen=True)
class CardFacts:
    """What the stores hold about one version; the only input of `render_card`."""

    name: str
    version: str
    created_at: str
    aliases: list[str]
    version_tags: dict[str, str]
    run_id: str | None
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    run_tags: dict[str, str] = field(default_factory=dict)
    files: dict[str, Any] = field(default_factory=dict)  # RUN_FILES key -> parsed content
    run_artifacts: list[str] = field(default_factory=list)
    history: list[AuditEntry] = field(default_factory=list)

    @property
    def config(self) -> TrainingConfig | None:
        raw = self.files.get("config")
        return TrainingConfig.model_validate(raw) if raw else None


def _parsed(path: str, text: str | None) -> Any:
    if text is None:
        return None
    return yaml.safe_load(text) if path.endswith((".yaml", ".yml")) else json.loads(text)


def _rolled_back_from(entry: AuditEntry) -> str | None:
    return entry.champion_before if entry.event == ROLLED_BACK else None


class NoSuchVersion(LookupError):
    """The model has no such version."""


def gather_facts(view: RegistryView, name: str, version: str, decisions: Path | str | None = None) -> CardFacts:
    """Read everything a card says about `name` version `version` from the stores."""
    found = view.version(name, version)
    if found is None:
        raise NoSuchVersion(f"{name} has no version {version!r}")
    ref, aliases = found.ref, found.aliases
    created = datetime.fromtimestamp(found.created_at / 1000, UTC).isoformat()
    entries = audit_log(decisions, name).entries() if decisions else []
    history = [e for e in entries if version in (e.version, _rolled_back_from(e))]
    if ref.run_id is None:
        return CardFacts(name, version, created, aliases, ref.tags, None, history=history)
    run = view.run(ref.run_id)
    files = {key: _parsed(path, view.read_run_file(ref.run_id, path)) for key, path in RUN_FILES.items()}
    return CardFacts(
        name=name,
        version=version,
        created_at=created,
        aliases=aliases,
        version_tags=ref.tags,
        run_id=ref.run_id,
        params=run.params,
        metrics=run.metrics,
        run_tags=run.tags,
        files={key: value for key, value in files.items() if value is not None},
        run_artifacts=view.run_files(ref.run_id, "explanations"),
        history=history,
    )


# --- rendering: pure ------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.4f}"
    return "n/a" if value is None else str(value)


def _cell(value: Any) -> str:
    return _fmt(value).replace("|", "\\|").replace("\n", " ")


def _status(facts: CardFacts) -> str:
    tags = facts.version_tags
    if CHAMPION in facts.aliases:
        now = "**the champion** (serving production)"
    elif PREVIOUS in facts.aliases:
        now = "the **previous champion** (the rollback target)"
    else:
        now = "not serving"
    return f"Now {now}. Decision: **{tags.get(TAG_DECISION, 'unknown')}** at {tags.get(TAG_DECIDED_AT, 'unknown')}."


def section_intended_use(facts: CardFacts) -> list[str]:
    config = facts.config
    if config is None:
        return ["## Intended use", "", "The training config was not found on the run.", ""]
    card = config.card
    lines = ["## Intended use", "", card.intended_use or config.description or "(not stated in the config)", ""]
    if card.out_of_scope:
        lines += ["Out of scope:", "", *[f"- {item}" for item in card.out_of_scope], ""]
    if card.owners:
        lines += [f"Owners: {', '.join(card.owners)}", ""]
    lines += [f"Task: {config.task} on `{config.target}`; primary metric `{config.gate.metric}`.", ""]
    return lines


def section_decision(facts: CardFacts) -> list[str]:
    tags, metrics = facts.version_tags, facts.metrics
    gate = facts.files.get("gate") or {}
    metric = gate.get("metric") or facts.params.get("metric", "metric")
    compared = tags.get(TAG_COMPARED_WITH, "none")
    lines = [
        "## Decision and the champion it was compared with",
        "",
        f"- Outcome: **{tags.get(TAG_DECISION, 'unknown')}**; gate passed: {tags.get(TAG_GATE_PASSED, 'unknown')}.",
        f"- Why: {tags.get(TAG_DECISION_REASON, '(no reason recorded)')}",
        f"- Compared with version: {compared}; replaced version: {tags.get(TAG_REPLACED, 'none')}.",
        "",
    ]
    if compared != "none":
        mine, theirs = metrics.get(f"holdout_{metric}"), metrics.get(f"champion_holdout_{metric}")
        lines += [
            f"On the same holdout ({facts.params.get('holdout_rows', '?')} rows from "
            f"{facts.params.get('holdout_start', '?')[:10]}):",
            "",
            f"| model | {metric} |",
            "| --- | --- |",
            f"| this version ({facts.version}) | {_fmt(mine)} |",
            f"| champion then ({compared}) | {_fmt(theirs)} |",
            "",
        ]
    return lines


def section_data(facts: CardFacts) -> list[str]:
    tags, params = facts.version_tags, facts.params
    config = facts.config
    digests = tags.get("driftloop.batch_sha256", facts.run_tags.get("driftloop.batch_sha256", "")).split(",")
    lines = [
        "## Data",
        "",
        f"- Window: {tags.get('driftloop.window', params.get('window', 'unknown'))} (start inclusive, end exclusive)",
        f"- Batches (SHA-256): {', '.join(f'`{d[:16]}`' for d in digests if d) or 'unknown'}",
        f"- Rows: train {params.get('train_rows', '?')}, validation {params.get('validation_rows', '?')} "
        f"(from {params.get('validation_start', '?')[:10]}), holdout {params.get('holdout_rows', '?')} "
        f"(from {params.get('holdout_start', '?')[:10]} to {params.get('end', '?')[:10]}); "
        "the model is fitted on train + validation, never on the holdout.",
    ]
    if config is not None:
        lines += [
            f"- Features: numeric {', '.join(config.features.numeric) or '-'}; "
            f"categorical {', '.join(config.features.categorical) or '-'}",
            f"- Never features (known only after the fact): {', '.join(config.leakage) or '-'}",
        ]
    return [*lines, ""]


def section_metrics(facts: CardFacts) -> list[str]:
    names = sorted(key.removeprefix("holdout_") for key in facts.metrics if key.startswith("holdout_"))
    lines = ["## Metrics on the holdout", "", "| metric | this version | champion then |", "| --- | --- | --- |"]
    lines += [
        f"| {n} | {_fmt(facts.metrics[f'holdout_{n}'])} | {_fmt(facts.metrics.get(f'champion_holdout_{n}'))} |"
        for n in names
    ]
    slices: dict[str, dict[str, float]] = facts.files.get("slices") or {}
    theirs: dict[str, dict[str, float]] = facts.files.get("champion_slices") or {}
    metric = facts.params.get("metric", "")
    if slices:
        lines += ["", f"By slice ({metric}):", "", "| slice | rows | this version | champion then |"]
        lines.append("| --- | --- | --- | --- |")
        for name, values in sorted(slices.items()):
            lines.append(
                f"| {name} | {int(values.get('rows', 0))} | {_fmt(values.get(metric))} "
                f"| {_fmt(theirs.get(name, {}).get(metric))} |"
            )
    return [*lines, ""]


def section_fairness(facts: CardFacts) -> list[str]:
    report = facts.files.get("fairness")
    config = facts.config
    if report is None:
        return ["## Fairness", "", "No sensitive attribute is named in the config: fairness was not measured.", ""]
    bounds = config.fairness.bounds if config else {}
    theirs = (facts.files.get("champion_fairness") or {}).get("metrics", {})
    lines = [
        "## Fairness",
        "",
        f"Across the groups of `{report['attribute']}` (largest gap between two groups; 0 is parity):",
        "",
        "| metric | this version | champion then | bound |",
        "| --- | --- | --- | --- |",
    ]
    for metric, value in report["metrics"].items():
        bound = bounds.get(metric)
        lines.append(
            f"| {metric} | {_fmt(value)} | {_fmt(theirs.get(metric))} | {'report only' if bound is None else bound} |"
        )
    groups: dict[str, dict[str, float]] = report["groups"]
    if groups:
        columns = [c for c in next(iter(groups.values())) if c != "rows"]
        lines += ["", f"| group | rows | {' | '.join(columns)} |", "| --- | --- |" + " --- |" * len(columns)]
        for group, values in groups.items():
            lines.append(f"| {group} | {int(values['rows'])} | {' | '.join(_fmt(values.get(c)) for c in columns)} |")
    if report.get("excluded"):
        lines += ["", f"Too small to measure: {', '.join(report['excluded'])}."]
    return [*lines, ""]


def section_gate(facts: CardFacts) -> list[str]:
    gate = facts.files.get("gate")
    if gate is None:
        return ["## Gate report", "", "No gate report was logged on the run.", ""]
    lines = ["## Gate report", "", "| rule | result | detail |", "| --- | --- | --- |"]
    lines += [
        f"| {c['rule']} | {'pass' if c['passed'] else '**FAIL**'} | {_cell(c['detail'])} |" for c in gate["checks"]
    ]
    return [*lines, ""]


def section_explanations(facts: CardFacts, top: int | None = None) -> list[str]:
    explanation = facts.files.get("explanation")
    if explanation is None:
        return ["## Explanations", "", "No explanations were logged on the run.", ""]
    importances = explanation.get("importances", [])[: top or None]
    lines = [
        "## Explanations",
        "",
        f"Permutation importance on {explanation.get('rows', '?')} holdout rows: the fall in "
        f"`{explanation.get('metric', '?')}` when one input column is shuffled (larger: the model relies on it more).",
        "",
        "| rank | feature | importance |",
        "| --- | --- | --- |",
    ]
    lines += [
        f"| {rank} | {item['feature']} | {_fmt(item['mean'])} ± {_fmt(item['std'])} |"
        for rank, item in enumerate(importances, start=1)
    ]
    plots = [p for p in facts.run_artifacts if p.endswith(".png")]
    pd_features = [p["feature"] for p in explanation.get("partial_dependence", [])]
    if pd_features:
        lines += ["", f"Partial dependence for {', '.join(pd_features)}: {', '.join(f'`{p}`' for p in plots)}."]
    shap = explanation.get("shap")
    lines += ["", f"SHAP: {'mean |SHAP| logged' if shap else explanation.get('shap_note', 'not computed')}."]
    return [*lines, ""]


def section_tuning(facts: CardFacts) -> list[str]:
    params = {k.removeprefix("model."): v for k, v in facts.params.items() if k.startswith("model.")}
    metrics = facts.metrics
    return [
        "## Model and tuning",
        "",
        "An sklearn Pipeline (ordinal-encoded categories, histogram gradient boosting), saved with skops.",
        f"Parameters: {', '.join(f'{k}={v}' for k, v in sorted(params.items())) or 'unknown'}.",
        f"Optuna study `{facts.run_tags.get('driftloop.optuna_study', '?')}`: "
        f"{int(metrics.get('tuning_trials', 0))} trials ({int(metrics.get('tuning_pruned', 0))} pruned) in "
        f"{metrics.get('tuning_seconds', 0):.0f} s; best parameters {facts.version_tags.get(TAG_BEST_PARAMS, '{}')}.",
        "",
    ]


def known_limits(facts: CardFacts) -> list[str]:
    """The config's stated limits, then those the numbers show."""
    config = facts.config
    limits = list(config.card.limitations) if config else []
    window = facts.version_tags.get("driftloop.window", "its training window")
    limits.append(
        f"Trained on {window}; data unlike it (another season, new routes or carriers) is outside what "
        "it has seen: drift monitoring watches for that."
    )
    slices: dict[str, dict[str, float]] = facts.files.get("slices") or {}
    if config is not None and slices:
        small = [n for n, v in sorted(slices.items()) if v.get("rows", 0) < config.gate.min_slice_rows]
        if small:
            limits.append(
                f"Slices with fewer than {config.gate.min_slice_rows} holdout rows were reported, not gated: "
                f"{', '.join(small)}."
            )
    fairness = facts.files.get("fairness")
    if fairness and fairness.get("excluded"):
        limits.append(f"Fairness was not measured for groups too small to measure: {', '.join(fairness['excluded'])}.")
    if config is not None and config.fairness.sensitive and config.task in FAIRNESS_METRICS:
        unbounded = [m for m in FAIRNESS_METRICS[config.task] if m not in config.fairness.bounds]
        if unbounded:
            limits.append(f"Fairness metrics reported but not gated: {', '.join(unbounded)}.")
    return limits


def section_lineage(facts: CardFacts) -> list[str]:
    tags, run_tags = facts.version_tags, facts.run_tags
    return [
        "## Lineage",
        "",
        f"- MLflow run: `{facts.run_id}`; Prefect flow run: `{run_tags.get(TAG_FLOW_RUN, 'unknown')}`",
        f"- Trigger: {tags.get('driftloop.reason', run_tags.get('driftloop.reason', 'unknown'))}",
        f"- Git revision: `{tags.get('driftloop.git_revision', run_tags.get('driftloop.git_revision', 'unknown'))}`",
        f"- Config SHA-256: `{run_tags.get('driftloop.config_sha256', 'unknown')}`",
        f"- Optuna study: `{run_tags.get('driftloop.optuna_study', 'unknown')}`",
        f"- Idempotency key: `{tags.get(TAG_IDEMPOTENCY_KEY, 'unknown')}`",
        f"- Model files SHA-256: `{tags.get('driftloop.model_sha256', 'unknown')}`",
        f"- Registered: {facts.created_at}",
        "",
    ]


def section_history(facts: CardFacts) -> list[str]:
    if not facts.history:
        return ["## History", "", "No entry in the promotion history names this version.", ""]
    lines = ["## History", ""]
    for entry in facts.history:
        lines.append(f"- {entry.describe()}")
        if (violations := entry.gate_line()) is not None:
            lines.append(f"  - gate: {violations}")
    return [*lines, ""]


def render_card(facts: CardFacts) -> str:
    """The whole card, in Markdown."""
    lines = [f"# Model card: {facts.name} version {facts.version}", "", _status(facts), ""]
    lines += section_intended_use(facts)
    lines += section_decision(facts)
    lines += section_data(facts)
    lines += section_metrics(facts)
    lines += section_fairness(facts)
    lines += section_gate(facts)
    lines += section_explanations(facts)
    lines += section_tuning(facts)
    lines += ["## Known limits", "", *[f"- {limit}" for limit in known_limits(facts)], ""]
    lines += section_lineage(facts)
    lines += section_history(facts)
    return "\n".join(lines)


def render_summary(facts: CardFacts, limit: int = DESCRIPTION_LIMIT) -> str:
    """The card itself when it fits MLflow's description, else its essentials and where the rest is."""
    card = render_card(facts)
    if len(card) <= limit:
        return card
    lines = [f"# Model card: {facts.name} version {facts.version}", "", _status(facts), ""]
    lines += section_decision(facts)
    lines += section_explanations(facts, top=5)
    lines += section_lineage(facts)
    lines += [f"The whole card: run artifact `{CARD_ARTIFACT}`, or `driftloop card --version {facts.version}`."]
    return "\n".join(lines)[:limit]


# --- publishing -----------------------------------------------------------------------------------


def publish_card(client: MlflowClient, name: str, version: str, history: Path | str | None) -> str:
    """Write the card where people read it: the version in MLflow, its run, and the Prefect UI."""
    from tasks.notify import artifact_key, publish_markdown

    facts = gather_facts(ClientView(client), name, version, history)
    card = render_card(facts)
    client.update_model_version(name, version, description=render_summary(facts))
    if facts.run_id is not None:
        client.log_text(facts.run_id, card, CARD_ARTIFACT)
    publish_markdown(card, key=artifact_key("model-card", name), description=f"{name} version {version}")
    return card


def publish_champion_change(client: MlflowClient, log: AuditLog, before: str | None, after: str | None) -> None:
    """After a rollback or a manual promotion: the history, and the cards of both versions ("now serving" moved)."""
    from tasks.audit import publish_history

    publish_history(client, log)
    for version in {before, after} - {None}:
        publish_card(client, log.model, str(version), log.history)
