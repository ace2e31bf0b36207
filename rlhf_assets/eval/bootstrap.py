"""Paired bootstrap confidence intervals for "model B scores higher than model A on the same prompts"."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float
    level: float

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    @classmethod
    def of(cls, figures: Any) -> Interval:
        """A step report's estimate (`step_contracts.base.Estimate`: `estimate`, `ci_low`, `ci_high`) as a 95%
        interval."""
        return cls(figures.estimate, figures.ci_low, figures.ci_high, 0.95)


def paired_bootstrap_mean_difference(
    a: Sequence[float], b: Sequence[float], *, resamples: int = 10_000, level: float = 0.95, seed: int = 0
) -> Interval:
    """Mean of b − a with a percentile CI from resampling prompts (pairs stay together)."""
    diffs = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    if diffs.ndim != 1 or diffs.size == 0:
        raise ValueError("need two equally long, non-empty score lists")
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, diffs.size, size=(resamples, diffs.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Interval(float(diffs.mean()), float(low), float(high), level)


def bootstrap_mean(
    values: Sequence[float], *, resamples: int = 10_000, level: float = 0.95, seed: int = 0
) -> Interval:
    """Mean of `values` (one per prompt) with a percentile CI from resampling prompts."""
    return paired_bootstrap_mean_difference(np.zeros(len(values)), values, resamples=resamples, level=level, seed=seed)
