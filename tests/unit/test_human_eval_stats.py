"""Human-eval statistics against values computed by hand (and the recipe's 30 / 54 / 16 as one case)."""

from __future__ import annotations

import pytest

from rlhf_assets.eval.agreement import cohen_kappa, fleiss_kappa, majority_outcome, sign_test
from rlhf_assets.eval.human_preference import JudgedLabel, summarize_human_preference

pytestmark = pytest.mark.unit


def test_sign_test_small_cases_by_hand() -> None:
    assert sign_test(5, 0) == pytest.approx(2 / 32)  # 2 · P(X = 5), X ~ Bin(5, ½)
    assert sign_test(3, 1) == pytest.approx(10 / 16)  # 2 · (4 + 1) / 16
    assert sign_test(2, 2) == 1.0
    assert sign_test(0, 0) == 1.0


def test_sign_test_recipe_counts() -> None:
    # 30 wins vs 16 losses (ties dropped): 2 · Σ_{k=30}^{46} C(46, k) / 2^46 = 0.05408, not significant at 5%.
    assert sign_test(30, 16) == pytest.approx(0.054076, abs=1e-6)
    assert sign_test(16, 30) == sign_test(30, 16)


def test_fleiss_kappa_matches_the_textbook_example() -> None:
    # Fleiss (1971) as tabulated on Wikipedia: 10 subjects, 14 raters, 5 categories; κ = 0.210.
    counts = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
              [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    ratings = [[category for category, n in enumerate(row) for _ in range(n)] for row in counts]
    assert fleiss_kappa(ratings) == pytest.approx(0.2099, abs=5e-4)


def test_fleiss_kappa_edges() -> None:
    assert fleiss_kappa([["win"], ["loss"]]) is None  # nobody overlaps
    assert fleiss_kappa([["win", "win"], ["tie", "tie"], ["loss", "loss"]]) == pytest.approx(1.0)
    # Two raters who always disagree between two balanced labels: P̄ = 0, P̄e = ½ → κ = −1.
    assert fleiss_kappa([["win", "loss"], ["loss", "win"]]) == pytest.approx(-1.0)
    assert fleiss_kappa([["tie", "tie"]]) == 1.0


def test_majority_outcome_treats_a_split_as_a_tie() -> None:
    assert majority_outcome(["win", "win", "loss"]) == "win"
    assert majority_outcome(["win", "loss"]) == "tie"
    assert majority_outcome(["loss"]) == "loss"
    with pytest.raises(ValueError):
        majority_outcome([])


def test_recipe_counts_summary() -> None:
    outcomes = ["win"] * 30 + ["tie"] * 54 + ["loss"] * 16
    labels = [JudgedLabel(i, "rater", outcome) for i, outcome in enumerate(outcomes)]
    result = summarize_human_preference(labels)
    assert (result.prompts.wins, result.prompts.ties, result.prompts.losses) == (30, 54, 16)
    # Wilson 95% for 84/100 by hand: centre (0.84 + 1.96²/200) / (1 + 1.96²/100) = 0.8274,
    # half-width 1.96 / 1.0384 · sqrt(0.84 · 0.16 / 100 + 1.96² / 40000) = 0.0716.
    interval = result.prompts.win_or_tie_rate
    assert interval.estimate == pytest.approx(0.84)
    assert interval.low == pytest.approx(0.7558, abs=5e-4)
    assert interval.high == pytest.approx(0.8990, abs=5e-4)
    assert result.sign_test_p == pytest.approx(0.054076, abs=1e-6)
    assert result.kappa is None and result.annotators == 1 and result.max_overlap == 1


def test_overlapping_annotators() -> None:
    labels = [JudgedLabel(0, "a", "win"), JudgedLabel(0, "b", "win"),
              JudgedLabel(1, "a", "win"), JudgedLabel(1, "b", "loss"),
              JudgedLabel(2, "a", "tie"), JudgedLabel(2, "b", "tie")]
    result = summarize_human_preference(labels)
    assert result.per_prompt == {0: "win", 1: "tie", 2: "tie"}
    assert (result.labels.wins, result.labels.ties, result.labels.losses) == (3, 2, 1)
    # Categories win 3/6, tie 2/6, loss 1/6 → P̄e = (9 + 4 + 1) / 36; P̄ = (1 + 0 + 1) / 3.
    expected_pe = 14 / 36
    assert result.kappa == pytest.approx((2 / 3 - expected_pe) / (1 - expected_pe))
    assert result.annotators == 2 and result.max_overlap == 2


def test_cohen_kappa_of_the_judge_against_people() -> None:
    """Issue 26 (6): agreement beyond chance, with the confusion counts; a constant pair of raters has no kappa."""
    judge = ["win"] * 40 + ["tie"] * 40 + ["loss"] * 20
    people = ["win"] * 30 + ["tie"] * 10 + ["tie"] * 40 + ["loss"] * 20
    result = cohen_kappa(judge, people)
    assert result.n == 100 and result.agreement == pytest.approx(0.9)
    assert result.confusion[("win", "tie")] == 10 and result.confusion[("loss", "loss")] == 20
    expected = 0.4 * 0.3 + 0.4 * 0.5 + 0.2 * 0.2
    assert result.kappa == pytest.approx((0.9 - expected) / (1 - expected))
    assert cohen_kappa(["tie"] * 5, ["tie"] * 5).kappa is None
    assert cohen_kappa(["win", "loss"], ["loss", "win"]).kappa == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="win, tie, loss"):
        cohen_kappa(["won"], ["win"])
