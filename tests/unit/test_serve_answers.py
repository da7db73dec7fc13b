"""What /predict answers per row, for each task type (flows/serve.py `answer_rows`)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from flows.serve import answer_rows


def test_binary_and_regression_answer_one_number_per_row() -> None:
    assert answer_rows(pd.Series([0.25, 0.75]), None, None) == [0.25, 0.75]
    assert answer_rows(np.array([12.5]), None, None) == [12.5]


def test_multiclass_answers_the_label_its_probability_and_every_class() -> None:
    probabilities = pd.Series([json.dumps({"rain": 0.7, "sun": 0.3}), json.dumps({"rain": 0.1, "sun": 0.9})])
    answered = answer_rows(pd.Series(["rain", "sun"]), pd.Series([0.7, 0.9]), probabilities)
    assert answered == [
        {"label": "rain", "confidence": 0.7, "probabilities": {"rain": 0.7, "sun": 0.3}},
        {"label": "sun", "confidence": 0.9, "probabilities": {"rain": 0.1, "sun": 0.9}},
    ]
