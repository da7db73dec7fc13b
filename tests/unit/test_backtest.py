"""The backtest's plan (periods, label arrival) and its baselines, on a small dataset of each task type."""

from __future__ import annotations

import math
from datetime import date

import numpy as np
import pandas as pd
import pytest

from tasks.backtest import ReplayPlan, measure_baselines, period_quality
from tasks.frontier import hindsight_frontier
from tasks.ingest import read_source, rows_in
from tasks.model import build_pipeline, features_and_target
from tasks.score import score_frame
from tasks.settings import ReplayConfig, TimeWindow

D = date.fromisoformat


def plan(**replay: object) -> ReplayPlan:
    return ReplayPlan.from_config(ReplayConfig.model_validate(replay))


@pytest.mark.parametrize(
    ("period", "start", "end", "expected"),
    [
        ("month", "2013-03-01", "2013-06-01", [("2013-03-01", "2013-04-01"), ("2013-04-01", "2013-05-01"),
                                               ("2013-05-01", "2013-06-01")]),
        ("month", "2024-01-31", "2024-04-15", [("2024-01-31", "2024-02-29"), ("2024-02-29", "2024-03-31"),
                                               ("2024-03-31", "2024-04-15")]),  # anchored, clamped, cut at end
        ("week", "2024-01-01", "2024-01-20", [("2024-01-01", "2024-01-08"), ("2024-01-08", "2024-01-15"),
                                              ("2024-01-15", "2024-01-20")]),
        ("day", "2024-02-28", "2024-03-02", [("2024-02-28", "2024-02-29"), ("2024-02-29", "2024-03-01"),
                                             ("2024-03-01", "2024-03-02")]),
        ("quarter", "2013-01-01", "2014-01-01", [("2013-01-01", "2013-04-01"), ("2013-04-01", "2013-07-01"),
                                                 ("2013-07-01", "2013-10-01"), ("2013-10-01", "2014-01-01")]),
        ("year", "2012-01-01", "2014-06-01", [("2012-01-01", "2013-01-01"), ("2013-01-01", "2014-01-01"),
                                              ("2014-01-01", "2014-06-01")]),
    ],
)  # fmt: skip
def test_periods_cover_the_replay_without_gaps(period: str, start: str, end: str, expected: list) -> None:
    windows = plan(start=start, end=end, period=period).periods

    assert [(w.start.isoformat(), w.end.isoformat()) for w in windows] == expected


def test_a_limit_keeps_the_first_periods() -> None:
    assert len(ReplayPlan.from_config(ReplayConfig(start=D("2013-03-01"), end=D("2014-01-01")), limit=2).periods) == 2


def test_without_delay_a_period_is_labelled_when_it_ends() -> None:
    p = plan(start="2013-03-01", end="2013-06-01")

    assert p.labelled_until(0) == D("2013-03-01")  # at the start: everything before it
    assert p.labelled_until(2) == D("2013-05-01")
    assert p.labels_arriving(0) == p.periods[0]
    assert p.labels_never_arrived() == []
    assert p.training_window(1, 59) == TimeWindow(start=D("2013-02-01"), end=D("2013-04-01"))


def test_with_a_delay_labels_arrive_periods_later_and_the_last_ones_only_after_the_replay() -> None:
    p = plan(start="2013-03-01", end="2013-07-01", label_delay_periods=2)

    assert p.labelled_until(0) == D("2013-01-01")  # two months before the start
    assert p.labelled_until(3) == D("2013-04-01")  # at the start of June: March's labels are in
    assert p.labels_arriving(0) is None
    assert p.labels_arriving(1) is None
    assert p.labels_arriving(2) == p.periods[0]
    assert p.labels_never_arrived() == p.periods[2:]


# --- the baselines, on a small dataset of each task type -----------------------------------------


def drifting(make_frame, task: str) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    """60 days; from day 30 on, the label follows the opposite of x1: a static model loses, refits win."""
    frame = make_frame(task, rows=1200, days=60, seed=3)
    later = frame["ts"] >= pd.Timestamp("2024-01-31", tz="UTC")
    frame.loc[later, "x1"] = 10 - frame.loc[later, "x1"]
    return frame


@pytest.fixture(params=["binary", "multiclass", "regression"])
def case(request, make_config, make_frame, tmp_path):  # type: ignore[no-untyped-def]
    """A small files dataset of each task type, read back through the source like any replay's."""
    task = request.param
    drifting(make_frame, task).to_csv(tmp_path / "history.csv", index=False)
    config = make_config(
        task,
        source={"kind": "files", "path": str(tmp_path / "history.csv")},
        window={"start": "2024-01-01", "end": "2024-01-22"},
        monitoring={"retrain_window_days": 14},
        replay={"start": "2024-01-22", "end": "2024-03-01", "period": "week"},
    )
    frame = read_source(config)
    initial = rows_in(frame, "ts", config.initial_window)
    static = build_pipeline(config, {"max_iter": 30}).fit(*features_and_target(config, initial))
    return config, frame, static


def by_hand(config, model, frame: pd.DataFrame) -> float:  # type: ignore[no-untyped-def]
    scores, _ = score_frame(model, frame, config)
    return period_quality(config, frame[config.target], scores)


def test_static_is_the_first_champion_on_every_period_and_always_a_refit_at_each_start(case) -> None:  # type: ignore[no-untyped-def]
    config, frame, static = case
    p = ReplayPlan.from_config(config.replay)
    result = measure_baselines(config, frame, p, static, {"max_iter": 30}, retrain_days=14)

    assert len(p.periods) == 6
    for index, period in enumerate(p.periods):
        rows = rows_in(frame, "ts", period)
        assert result.static[index] == pytest.approx(by_hand(config, static, rows))
        history = rows_in(frame, "ts", p.training_window(index, 14))
        refit = build_pipeline(config, {"max_iter": 30}).fit(*features_and_target(config, history))
        assert result.always[index] == pytest.approx(by_hand(config, refit, rows))
    assert result.refits == 6
    assert result.fit_cpu_seconds > 0
    assert result.quality.shape == (7, 6)
    assert np.isnan(result.quality[1:][np.tril(np.ones((6, 6), bool), k=-1)]).all()  # no model before its fit
    assert np.isfinite(result.quality[np.triu(np.ones((7, 6), bool), k=-1)]).all()
    frontier = hindsight_frontier(result.quality, config.higher_is_better)
    assert frontier.best_mean[0] == pytest.approx(np.mean(result.static))
    assert frontier.best_mean[6] == pytest.approx(np.mean(result.always))


def test_refitting_pays_on_the_drifting_data(case) -> None:  # type: ignore[no-untyped-def]
    config, frame, static = case
    result = measure_baselines(config, frame, ReplayPlan.from_config(config.replay), static, {}, retrain_days=14)

    late = slice(3, 6)  # the weeks after the change, once a refit has seen it
    always, kept = np.mean(result.always[late]), np.mean(result.static[late])
    assert always > kept if config.higher_is_better else always < kept


def test_a_period_without_rows_is_measured_by_nobody_and_a_window_without_labels_keeps_the_model(case) -> None:  # type: ignore[no-untyped-def]
    config, frame, static = case
    gap = TimeWindow(start=D("2024-02-05"), end=D("2024-02-12"))
    frame = frame.drop(rows_in(frame, "ts", gap).index)  # the third week is empty
    frame.loc[frame["ts"] >= pd.Timestamp("2024-01-22", tz="UTC"), "y"] = (
        None  # and nothing after the start is labelled
    )
    result = measure_baselines(config, frame, ReplayPlan.from_config(config.replay), static, {}, retrain_days=14)

    assert all(math.isnan(v) for v in result.static + result.always)  # no labels, no quality
    assert result.refits == 2  # the trailing 14 days still reach into labelled January for two weeks
    assert any("not refitted" in note for note in result.notes)
