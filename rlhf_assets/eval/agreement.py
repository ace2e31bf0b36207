"""Statistics for human pairwise judgements: the exact sign test and Fleiss' kappa.

Ties carry no direction, so the sign test asks only whether wins and losses are equally likely; kappa says
whether several annotators judging the same prompt agree more than chance would make them.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass


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


OUTCOMES = ("win", "tie", "loss")


@dataclass(frozen=True)
class RaterAgreement:
    """How two raters of the same prompts agree: Cohen's kappa, the raw agreement and the confusion counts."""

    kappa: float | None  # None when chance agreement is total (both always said the same one outcome)
    agreement: float
    n: int
    confusion: dict[tuple[str, str], int]  # (first rater's outcome, second rater's) -> prompts


def cohen_kappa(first: Sequence[str], second: Sequence[str], labels: Sequence[str] = OUTCOMES) -> RaterAgreement:
    """Cohen's kappa of two raters' labels on the same items: agreement beyond what their label shares alone give.

    Used for the automatic judge against people (the human majority per prompt): a judge that agrees with raters
    no more than chance would is no stand-in for them, whatever its win rate says.
    """
    if len(first) != len(second) or not first:
        raise ValueError("need the same, non-empty list of items rated by both")
    unknown = (set(first) | set(second)) - set(labels)
    if unknown:
        raise ValueError(f"labels must be {', '.join(labels)}, got {sorted(unknown)}")
    n = len(first)
    confusion = {(a, b): 0 for a in labels for b in labels}
    for a, b in zip(first, second, strict=True):
        confusion[(a, b)] += 1
    observed = sum(confusion[(label, label)] for label in labels) / n
    expected = sum((sum(confusion[(label, b)] for b in labels) / n) * (sum(confusion[(a, label)] for a in labels) / n)
                   for label in labels)
    kappa = None if math.isclose(expected, 1.0) else (observed - expected) / (1 - expected)
    return RaterAgreement(kappa=kappa, agreement=observed, n=n, confusion=confusion)
