"""How sure a comparison is: a paired bootstrap of challenger minus champion on the same rows (pure).

Both models are scored on one set of rows; each draw resamples those rows with replacement and
recomputes both metrics on the same resample, so what the rows have in common (an easy week, a
hard carrier) cancels, and the spread left is the sampling noise of the difference. A slice of
2,000 rows moves an AUC by a few hundredths by chance alone: the gate must not read that as a
regression.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Metric = Callable[[np.ndarray], float]  # one model's metric on the rows at these indices


@dataclass(frozen=True)
class GainInterval:
    """The central `confidence` interval of the gain (positive: the challenger is better)."""

    low: float
    high: float
    confidence: float
    draws: int  # draws whose gain could be computed (a resample with one class has no AUC)

    @property
    def measured(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)

    def describe(self) -> str:
        if not self.measured:
            return "no interval (too few measurable resamples)"
        level = f"{self.confidence * 100:.3g}%"
        return f"{level} interval of the gain [{self.low:+.4f}, {self.high:+.4f}] ({self.draws} draws)"


def paired_gain_interval(
    challenger: Metric,
    champion: Metric,
    rows: np.ndarray,
    higher_is_better: bool,
    draws: int,
    confidence: float,
    rng: np.random.Generator,
) -> GainInterval:
    """Percentile interval of sign * (challenger - champion) over `draws` paired resamples of `rows`.

    No interval (NaN bounds) when fewer than half the draws could be measured: an interval from a
    handful of resamples would claim a certainty the data does not give.
    """
    sign = 1.0 if higher_is_better else -1.0
    gains = []
    for _ in range(draws):
        sample = rng.choice(rows, size=len(rows), replace=True)
        gain = sign * (challenger(sample) - champion(sample))
        if math.isfinite(gain):
            gains.append(gain)
    if not gains or len(gains) < draws / 2:
        return GainInterval(math.nan, math.nan, confidence, len(gains))
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(gains, [tail, 100 - tail])
    return GainInterval(float(low), float(high), confidence, len(gains))
