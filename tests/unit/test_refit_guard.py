"""The refit after a pass is served only when it does at least as well on the holdout it saw."""

from __future__ import annotations

import math
from collections.abc import Callable

import pandas as pd
import pytest

from tasks.model import build_pipeline, features_and_target
from tasks.settings import TrainingConfig
from tasks.train import holdout_metric, refit_may_serve


@pytest.mark.parametrize(
    ("seen", "judged", "higher_is_better", "serves"),
    [
        (0.74, 0.71, True, True),  # fitted on the holdout: better there, as it should be
        (0.71, 0.71, True, True),
        (0.69, 0.71, True, False),  # worse on rows it saw than the judged model on rows it did not
        (40.0, 52.0, False, True),  # rmse: lower is better
        (60.0, 52.0, False, False),
        (math.nan, 0.71, True, False),  # a fit that cannot be measured is never served
        (0.74, math.nan, True, True),  # the judged model had no holdout number of its own to beat
    ],
)
def test_refit_may_serve(seen: float, judged: float, higher_is_better: bool, serves: bool) -> None:
    assert refit_may_serve(seen, judged, higher_is_better) is serves


def test_a_refit_scores_its_own_holdout_better_than_a_model_that_never_saw_it(
    make_config: Callable[..., TrainingConfig], make_frame: Callable[..., pd.DataFrame]
) -> None:
    config = make_config("binary")
    fit, holdout = make_frame("binary", rows=400, seed=1), make_frame("binary", rows=200, seed=2)
    params = {"max_iter": 30}
    judged = build_pipeline(config, params).fit(*features_and_target(config, fit))
    whole = pd.concat([fit, holdout], ignore_index=True)
    refitted = build_pipeline(config, params).fit(*features_and_target(config, whole))

    seen, unseen = holdout_metric(config, refitted, holdout), holdout_metric(config, judged, holdout)
    assert 0.5 < unseen < 1.0
    assert refit_may_serve(seen, unseen, config.higher_is_better)
