"""Statistics for human pairwise judgements: the exact sign test and Fleiss' kappa.

Ties carry no direction, so the sign test asks only whether wins and losses are equally likely; kappa says
whether several annotators judging the same prompt agree more than chance would make them.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Sequence


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact binomial p-value of `wins` against `losses` under p = 0.5 (ties dropped beforehand)."""
    if wins < 0 or losses < 0:
        raise ValueError(f"counts must be non-negative, got wins={wins}, losses={losses}")
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(max(wins, losses), n + 1)) / 2**n
    return min(1.0, 2 * tail)


def fleiss_kappa(ratings: Sequence[Sequence[Hashable]]) -> float | None:
    """Fleiss' kappa over items that each have two or more ratings; None when no item does.

    Items may have different numbers of raters (each item's agreement is computed over its own rater pairs,
    the usual generalisation); with every item rated by the same number of people it is Fleiss (1971).
    Returns 1.0 when all ratings are identical (no disagreement possible beyond chance, and none observed).
    """
    items = [list(item) for item in ratings if len(item) >= 2]
    if not items:
        return None
    categories = Counter(label for item in items for label in item)
    total = sum(categories.values())
    expected = sum((count / total) ** 2 for count in categories.values())
    observed = sum(
        (sum(n * n for n in Counter(item).values()) - len(item)) / (len(item) * (len(item) - 1)) for item in items
    ) / len(items)
    if math.isclose(expected, 1.0):
        return 1.0
    return (observed - expected) / (1 - expected)


def majority_outcome(outcomes: Sequence[str]) -> str:
    """One prompt's outcome from its annotators: the strict majority, otherwise a tie (annotators split)."""
    if not outcomes:
        raise ValueError("a prompt needs at least one judgement")
    label, count = Counter(outcomes).most_common(1)[0]
    return label if count * 2 > len(outcomes) else "tie"
