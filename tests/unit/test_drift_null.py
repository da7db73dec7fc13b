"""Drift thresholds from the data's own noise (tasks/drift_null.py): scales, resampling, error rates."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from evidently.legacy.calculations.stattests.jensenshannon import _jensenshannon
from evidently.legacy.calculations.stattests.wasserstein_distance_norm import _wasserstein_distance_norm
from evidently.legacy.core import ColumnType

from tasks.drift import drift_report, evidently_scores
from tasks.drift_null import DayBlocks, NullThresholds, calibrate, counts, distance, encode
from tasks.drift_policy import decide_drift
from tasks.settings import TrainingConfig

NOW = pd.Timestamp("2024-06-01", tz="UTC").to_pydatetime()


def days_frame(days: int, rows_per_day: int, seed: int, *, start: str = "2024-01-01", **shift: float) -> pd.DataFrame:
    """The conftest config's features over whole days; x2 has a daily offset (weather-like spells)."""
    rng = np.random.default_rng(seed)
    rows = days * rows_per_day
    day = np.repeat(np.arange(days), rows_per_day)
    ts = (
        pd.Timestamp(start, tz="UTC")
        + pd.to_timedelta(day, unit="D")
        + pd.to_timedelta(rng.uniform(0, 86399, rows), unit="s")
    )
    spell = rng.normal(0, 1, days)[day]  # every row of a day shares it
    return pd.DataFrame(
        {
            "ts": ts,
            "x1": rng.uniform(0, 10, rows) + shift.get("x1", 0.0),
            "x2": rng.normal(0, 0.3, rows) + spell,
            "c1": rng.choice(["a", "b", "c"], rows),
            "y": (rng.random(rows) < 0.3 + shift.get("y", 0.0)).astype("int64"),
        }
    )


@pytest.fixture
def config(make_config: Callable[..., TrainingConfig]) -> TrainingConfig:
    return make_config("binary", monitoring={"window_days": 14, "min_rows": 100, "min_labelled_rows": 100})


def test_distances_are_evidentlys_own_on_numbers_and_categories():
    rng = np.random.default_rng(1)
    ref = pd.Series(np.r_[rng.normal(0, 2, 3000), [np.nan] * 50])
    cur = pd.Series(np.r_[rng.normal(0.7, 2.5, 1000), [np.nan] * 5])
    both = encode(pd.concat([ref, cur], ignore_index=True), numeric=True)
    ours = distance(both, counts(both, np.arange(len(ref)))[0], counts(both, np.arange(len(ref), both.rows))[0])
    theirs, _ = _wasserstein_distance_norm(ref.dropna(), cur.dropna(), ColumnType.Numerical, 0.1)
    assert ours == pytest.approx(theirs, rel=1e-9)

    ref_c = pd.Series(rng.choice(["a", "b", "c"], 2000, p=[0.5, 0.3, 0.2]))
    cur_c = pd.Series(rng.choice(["a", "b", "d"], 700, p=[0.2, 0.3, 0.5]))  # "c" gone, "d" new
    both_c = encode(pd.concat([ref_c, cur_c], ignore_index=True), numeric=False)
    ours_c = distance(
        both_c, counts(both_c, np.arange(len(ref_c)))[0], counts(both_c, np.arange(len(ref_c), both_c.rows))[0]
    )
    theirs_c, _ = _jensenshannon(ref_c, cur_c, ColumnType.Categorical, 0.1)
    assert ours_c == pytest.approx(theirs_c, rel=1e-9)


def test_day_blocks_draw_whole_days_of_the_asked_length():
    frame = days_frame(days=30, rows_per_day=7, seed=0)
    blocks = DayBlocks.of(frame["ts"])
    assert (blocks.days, blocks.block) == (30, 3)  # round(30 ** (1/3))
    rows = blocks.sample(np.random.default_rng(0), 10)
    day_of = (frame["ts"].dt.normalize() - frame["ts"].min().normalize()).dt.days.to_numpy()
    drawn = pd.Series(day_of[rows]).value_counts()
    assert len(rows) == 70  # ten whole days
    assert (drawn % 7 == 0).all()  # every drawn day with all of its rows (a day may be drawn twice)
    with pytest.raises(ValueError, match="without a timestamp"):
        DayBlocks.of(pd.Series([pd.Timestamp("2024-01-01", tz="UTC"), pd.NaT]))


def test_a_feature_that_moves_by_the_day_gets_a_wider_null_than_one_that_does_not(config):
    null = calibrate(days_frame(days=60, rows_per_day=200, seed=0), config)
    # x1 is i.i.d. uniform, x2 carries a daily spell as large as its within-day spread
    assert null.distance["x2"] > 5 * null.distance["x1"]
    narrower = calibrate(
        days_frame(days=60, rows_per_day=200, seed=0),
        config.model_copy(update={"monitoring": config.monitoring.model_copy(update={"window_days": 56})}),
    )
    assert narrower.distance["x1"] < null.distance["x1"]  # a longer window has less sampling noise
    assert null.label is not None
    assert null.prediction is None  # no prediction column in this reference


def test_unchanged_data_alarms_at_about_the_false_alarm_rate_and_a_shift_always(config):
    """Fresh windows from the reference's own process: few alarms; a real shift: every window."""
    reference = days_frame(days=60, rows_per_day=100, seed=0)
    null = calibrate(reference, config)
    alarms, caught = 0, 0
    for seed in range(1, 21):
        for shifted, tally in ((False, "alarms"), (True, "caught")):
            current = days_frame(days=14, rows_per_day=100, seed=seed, start="2024-03-01", x1=3.0 if shifted else 0.0)
            result, _ = drift_report(reference, current, config, prediction_column="none", null=null)
            fired = decide_drift(result, config.monitoring, None, NOW).retrain
            if tally == "alarms":
                alarms += fired
            else:
                caught += fired
    assert alarms <= 3  # false_alarm_rate 0.05 over 20 checks: 1 expected
    assert caught == 20


def test_the_share_rule_keeps_the_features_correlation(make_config):
    """Ten copies of one feature drift together: chance alone makes all ten drift, so all ten are needed.
    Ten independent features rarely drift together by chance: a few suffice."""
    rng = np.random.default_rng(0)
    reference = days_frame(days=60, rows_per_day=100, seed=0)
    copies = {f"k{i}": reference["x2"] for i in range(10)}
    independent = {f"k{i}": rng.normal(0, 1, len(reference)) for i in range(10)}
    needed = {}
    for name, columns in (("copies", copies), ("independent", independent)):
        config = make_config(
            "binary", features={"numeric": list(columns), "categorical": []}, slices=[], monitoring={"window_days": 14}
        )
        needed[name] = calibrate(reference.assign(**columns), config).min_drifted
    assert needed["copies"] == 10
    assert needed["independent"] <= 5  # half of them (a binomial count would say 4 at this rate)


def test_a_null_rate_jump_and_unseen_categories_flag_a_feature_whose_distance_cannot_see_them(config):
    reference = days_frame(days=60, rows_per_day=100, seed=0)
    null = calibrate(reference, config)
    current = days_frame(days=14, rows_per_day=100, seed=5, start="2024-03-01")
    current.loc[current.index[::3], "x1"] = np.nan  # a third of x1 stops arriving: Evidently drops NaN
    current.loc[current.index[::4], "c1"] = "z"  # a category the reference never had
    result, _ = drift_report(reference, current, config, prediction_column="none", null=null)
    by_name = {c.column: c for c in result.columns}
    assert by_name["x1"].score < by_name["x1"].threshold  # the distance alone misses it
    assert any("null rate changed by 0.33" in q for q in by_name["x1"].quality)
    assert any("unseen categories in 0.250 of rows" in q for q in by_name["c1"].quality)
    assert by_name["x2"].quality == ()
    decision = decide_drift(result, config.monitoring, None, NOW)
    # c1's new category also moves its distance far past chance: drift, and the reason says why
    assert decision.retrain
    assert "c1" in decision.reasons[0]
    assert "unseen categories" in decision.reasons[0]


def test_label_drift_is_measured_on_labelled_rows_and_named_in_the_decision(config):
    reference = days_frame(days=60, rows_per_day=100, seed=0)
    null = calibrate(reference, config)
    current = days_frame(days=14, rows_per_day=100, seed=3, start="2024-03-01", y=0.4)  # 30% -> 70% positive
    current["y"] = current["y"].astype(float)  # labels joined later arrive as floats: same classes
    result, snapshot = drift_report(reference, current, config, prediction_column="none", null=null)
    assert result.label is not None
    assert result.label.score > result.label.threshold
    # the HTML report, seeing every row here, shows the score the decision used
    assert evidently_scores(snapshot.dict())["y"][1] == pytest.approx(result.label.score, rel=1e-9)
    decision = decide_drift(result, config.monitoring, None, NOW)
    assert decision.retrain
    assert any(r.startswith("label drift: jensenshannon") and "x the threshold" in r for r in decision.reasons)
    unlabelled = current.assign(y=np.nan)
    assert drift_report(reference, unlabelled, config, prediction_column="none", null=null)[0].label is None


def test_fixed_thresholds_in_the_config_override_the_null(config):
    reference = days_frame(days=60, rows_per_day=100, seed=0)
    null = calibrate(reference, config)
    fixed = config.model_copy(
        update={
            "monitoring": config.monitoring.model_copy(
                update={"column_threshold": 0.5, "drifted_share": 0.6, "prediction_threshold": 0.4}
            )
        }
    )
    current = days_frame(days=14, rows_per_day=100, seed=2, start="2024-03-01")
    result, _ = drift_report(reference, current, fixed, prediction_column="none", null=null)
    assert {c.threshold for c in result.columns} == {0.5}
    assert result.min_drifted == 2  # ceil(0.6 * 3)
    calibrated, _ = drift_report(reference, current, config, prediction_column="none", null=null)
    assert [c.threshold for c in calibrated.columns] == [pytest.approx(null.distance[c]) for c in ("x1", "x2", "c1")]
    assert calibrated.min_drifted == null.min_drifted


def test_the_null_round_trips_as_json_and_a_missing_one_is_calibrated_from_the_reference(config):
    reference = days_frame(days=60, rows_per_day=100, seed=0)
    null = calibrate(reference, config)
    assert NullThresholds.from_dict(null.to_dict()) == null
    assert null.count_tail[0] == 1.0
    assert all(a >= b for a, b in zip(null.count_tail, null.count_tail[1:], strict=False))
    current = days_frame(days=14, rows_per_day=100, seed=2, start="2024-03-01")
    stored, _ = drift_report(reference, current, config, prediction_column="none", null=null)
    recalibrated, _ = drift_report(reference, current, config, prediction_column="none")
    assert stored == recalibrated  # seeded: the same thresholds, the same result
    assert math.isfinite(null.min_drifted_share)
    with pytest.raises(ValueError, match=r"no timestamp column 'ts'.*fix monitoring.column_threshold"):
        calibrate(reference.drop(columns="ts"), config)
