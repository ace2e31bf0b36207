"""Pairwise preference statistics: win / tie / loss counts and Wilson score intervals.

The recipe reports that annotators preferred or tied the RLHF response on 84 of 100 prompts (30 wins, 54 ties,
16 losses) with no interval; a Wilson interval says how much 100 judgements can tell.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from rlhf_assets.eval.bootstrap import Interval

RECIPE_REFERENCE = {"wins": 30, "ties": 54, "losses": 16}


def wilson_interval(successes: int, trials: int, level: float = 0.95) -> Interval:
    """Wilson score interval of a proportion: honest near 0 and 1 and for small n, unlike the normal one."""
    if trials <= 0 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 ≤ successes ≤ trials and trials > 0, got {successes}/{trials}")
    z = _normal_quantile(0.5 + level / 2)
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z / (1 + z * z / trials) * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half), level)


def _normal_quantile(q: float) -> float:
    """Inverse of the standard normal CDF by bisection on `math.erf` (no SciPy needed)."""
    low, high = -10.0, 10.0
    for _ in range(100):
        mid = (low + high) / 2
        if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < q:
            low = mid
        else:
            high = mid
    return (low + high) / 2


@dataclass(frozen=True)
class PreferenceSummary:
    """Counts of candidate-vs-baseline outcomes with Wilson intervals of the rates that matter."""

    wins: int
    ties: int
    losses: int

    @property
    def total(self) -> int:
        return self.wins + self.ties + self.losses

    @property
    def win_rate(self) -> Interval:
        return wilson_interval(self.wins, self.total)

    @property
    def win_or_tie_rate(self) -> Interval:
        """The recipe's headline: the share of prompts where RLHF was preferred or tied."""
        return wilson_interval(self.wins + self.ties, self.total)

    @property
    def loss_rate(self) -> Interval:
        return wilson_interval(self.losses, self.total)


def judge_by_margin(baseline: Sequence[float], candidate: Sequence[float], margin: float) -> list[str]:
    """'win' / 'tie' / 'loss' for the candidate on each prompt; differences within ±margin are ties."""
    if len(baseline) != len(candidate):
        raise ValueError("need one baseline and one candidate score per prompt")
    return ["tie" if abs(c - b) <= margin else "win" if c > b else "loss"
            for b, c in zip(baseline, candidate, strict=True)]


def summarize_outcomes(outcomes: Sequence[str]) -> PreferenceSummary:
    """Count 'win' / 'tie' / 'loss' outcomes; anything else is an error."""
    unknown = set(outcomes) - {"win", "tie", "loss"}
    if unknown:
        raise ValueError(f"outcomes must be win, tie or loss, got {sorted(unknown)}")
    return PreferenceSummary(outcomes.count("win"), outcomes.count("tie"), outcomes.count("loss"))
