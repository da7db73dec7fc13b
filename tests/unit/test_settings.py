"""Config loading: shipped configs load, each broken config fails loudly with the file and the problem named."""

from __future__ import annotations

import math
from pathlib import Path

import pydantic
import pytest

from tasks.settings import METRIC_DIRECTIONS, ConfigError, ParamRange, load_config

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "configs").glob("*.yaml"))
CONFIGS = REPO / "tests" / "configs"
INVALID = sorted((CONFIGS / "invalid").glob("*.yaml"))


def expected_fragment(path: Path) -> str:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name}: first line must be '# expect: <fragment>'"
    return first.removeprefix("# expect: ").strip()


# --- configs that must load ---------------------------------------------------------------------


def test_the_repo_ships_at_least_one_config() -> None:
    assert SHIPPED, "configs/*.yaml is empty: the parametrized load test below would silently run nothing"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_config_loads(path: Path) -> None:
    config = load_config(path)
    assert config.gate.metric in METRIC_DIRECTIONS[config.task]
    assert set(config.slices) <= set(config.features.categorical)
    assert config.target not in config.features.all


@pytest.mark.parametrize(
    ("name", "task", "metric", "higher_is_better"),
    [
        ("binary.yaml", "binary", "roc_auc", True),
        ("multiclass.yaml", "multiclass", "f1_macro", True),
        ("regression.yaml", "regression", "rmse", False),
    ],
)
def test_minimal_valid_configs_load(name: str, task: str, metric: str, higher_is_better: bool) -> None:
    config = load_config(CONFIGS / "valid" / name)
    assert config.task == task
    assert config.source.kind == "files"
    assert config.gate.metric == metric
    assert config.higher_is_better is higher_is_better


def test_loaded_config_is_frozen() -> None:
    config = load_config(CONFIGS / "valid" / "binary.yaml")
    with pytest.raises(pydantic.ValidationError):
        config.target = "x1"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("task", "metric", "higher_is_better"),
    [
        ("binary", "log_loss", False),
        ("binary", "brier", False),
        ("binary", "average_precision", True),
        ("multiclass", "log_loss", False),
        ("regression", "mae", False),
        ("regression", "r2", True),
    ],
)
def test_metric_direction_follows_the_metric(make_config, task: str, metric: str, higher_is_better: bool) -> None:
    assert make_config(task, gate={"metric": metric}).higher_is_better is higher_is_better


# --- configs that must not load -----------------------------------------------------------------


def test_there_are_invalid_configs_to_check() -> None:
    assert len(INVALID) >= 10


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_config_is_rejected_with_file_and_reason(path: Path) -> None:
    fragment = expected_fragment(path)
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    message = str(raised.value)
    assert message.startswith(f"{path}:"), message
    assert fragment in message, f"expected {fragment!r} in:\n{message}"


def test_missing_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "absent.yaml"
    with pytest.raises(ConfigError, match="not found") as raised:
        load_config(missing)
    assert str(missing) in str(raised.value)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = (CONFIGS / "valid" / "binary.yaml").read_text(encoding="utf-8")
    text = text.replace("numeric: [x1, x2]", "numeric: [x1, x2, y]").replace("slices: [c1]", "slices: [x2]")
    text = text.replace("task: binary\n", "task: binary\ncolour: blue\n").replace("metric: roc_auc", "metric: r2")
    path = tmp_path / "many.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    message = str(raised.value)
    # the unknown key is a field error; the cross-field rules run only once the fields are valid
    assert "colour" in message
    path.write_text(text.replace("colour: blue\n", ""), encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    message = str(raised.value)
    for fragment in ("target 'y' is also a feature", "slices must be categorical features: ['x2']", "'r2'"):
        assert fragment in message


# --- ParamRange.contains ------------------------------------------------------------------------

INT = ParamRange(type="int", low=1, high=10)
FLOAT = ParamRange(type="float", low=0.1, high=1.0)
LOG_FLOAT = ParamRange(type="float", low=1e-3, high=10.0, log=True)
CATEGORICAL = ParamRange(type="categorical", choices=["a", "b", 3])
BOOLS = ParamRange(type="categorical", choices=[True, False])


@pytest.mark.parametrize(
    ("dim", "value", "expected"),
    [
        (INT, 1, True),
        (INT, 10, True),
        (INT, 5, True),
        (INT, 5.0, True),  # an integral float is the same value
        (INT, 0, False),
        (INT, 11, False),
        (INT, 5.5, False),
        (INT, True, False),  # bool is an int subclass, but not a parameter value
        (INT, False, False),
        (INT, "5", False),
        (INT, None, False),
        (INT, math.nan, False),
        (INT, math.inf, False),
        (INT, -math.inf, False),
        (FLOAT, 0.1, True),
        (FLOAT, 1.0, True),
        (FLOAT, 1, True),
        (FLOAT, 0.55, True),
        (FLOAT, 0.0999, False),
        (FLOAT, 1.0001, False),
        (FLOAT, True, False),
        (FLOAT, math.nan, False),
        (FLOAT, math.inf, False),
        (FLOAT, "0.5", False),
        (LOG_FLOAT, 1e-3, True),
        (LOG_FLOAT, 0.0, False),
        (CATEGORICAL, "a", True),
        (CATEGORICAL, 3, True),
        (CATEGORICAL, "c", False),
        (CATEGORICAL, "3", False),
        (CATEGORICAL, None, False),
        (BOOLS, True, True),
        (BOOLS, False, True),
        (BOOLS, "False", False),
        (BOOLS, None, False),
    ],
)
def test_param_range_contains(dim: ParamRange, value: object, expected: bool) -> None:
    assert dim.contains(value) is expected


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"type": "categorical"}, "non-empty choices"),
        ({"type": "categorical", "choices": []}, "non-empty choices"),
        ({"type": "int", "low": 1}, "needs low and high"),
        ({"type": "float", "low": 2, "high": 1}, "greater than high"),
        ({"type": "float", "low": 0, "high": 1, "log": True}, "low > 0"),
        ({"type": "int", "low": 1, "high": 5, "step": 2}, "Extra inputs"),
    ],
)
def test_param_range_shape_is_checked(raw: dict, fragment: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=fragment):
        ParamRange.model_validate(raw)


# --- the replay section and the shipped backtests -----------------------------------------------


def test_a_replay_section_fills_in_its_defaults(make_config) -> None:  # type: ignore[no-untyped-def]
    config = make_config("regression", replay={"start": "2024-02-01", "end": "2024-06-01"})

    assert config.replay is not None
    assert (config.replay.period, config.replay.label_delay_periods) == ("month", 0)
    assert config.replay.baselines == ["static", "always", "frontier"]
    assert config.initial_window == config.window
    explicit = make_config(
        "regression",
        replay={
            "start": "2024-03-01",
            "end": "2024-06-01",
            "initial_window": {"start": "2024-02-01", "end": "2024-03-01"},
        },
    )
    assert explicit.initial_window.start.isoformat() == "2024-02-01"


def test_the_control_is_flights_with_its_time_order_destroyed() -> None:
    import yaml

    flights = yaml.safe_load((REPO / "configs" / "flights.yaml").read_text())
    control = yaml.safe_load((REPO / "configs" / "flights-control.yaml").read_text())

    differ = {key for key in flights.keys() | control.keys() if flights.get(key) != control.get(key)}
    assert differ == {"name", "model_name", "description", "timestamp", "derive"}
    *shared, derived = control["derive"]
    assert shared == flights["derive"]  # the same label, repairs and weekday, from the real schedule
    assert derived["op"] == "random_time"
    assert derived["name"] == control["timestamp"]
    assert derived["key"] == flights["validation"]["unique_key"]  # every flight keeps its own row key


REPLAYED = [p for p in SHIPPED if load_config(p).replay is not None]


def test_every_task_type_ships_a_backtest() -> None:
    assert {load_config(p).task for p in REPLAYED} == {"binary", "multiclass", "regression"}


@pytest.mark.parametrize("path", REPLAYED, ids=lambda p: p.name)
def test_every_shipped_backtest_has_data_in_its_initial_window_and_in_each_period(path: Path) -> None:
    from tasks.backtest import ReplayPlan
    from tasks.ingest import read_source, rows_in

    config = load_config(path)
    assert config.replay is not None
    frame = read_source(config)
    assert frame[config.timestamp].is_unique or config.validation.unique_key != [config.timestamp]
    assert len(rows_in(frame, config.timestamp, config.initial_window)) >= config.validation.min_rows
    counts = [len(rows_in(frame, config.timestamp, p)) for p in ReplayPlan.from_config(config.replay).periods]
    assert min(counts) > 0, counts
