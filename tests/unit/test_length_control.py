"""Length control (eval/length.py): a policy that only writes shorter replies than SFT wins nothing once length is
controlled, though its raw figures say it is preferred and less toxic."""

import numpy as np
import pandas as pd
import pytest

from rlhf_assets.eval.length import (
    length_controlled_win_rate,
    log_length,
    loss_minus_win,
    regression_adjusted,
    word_count,
)
from rlhf_assets.eval.toxicity import summarize

pytestmark = pytest.mark.unit

PROMPTS = 300
VOCABULARY = ["the", "a", "model", "said", "you", "people", "think", "this", "that", "never", "always", "good",
              "bad", "idea", "reply"]


def sft_replies(rng: np.random.Generator, count: int) -> list[str]:
    return [" ".join(rng.choice(VOCABULARY, size=int(rng.integers(3, 40)))) for _ in range(count)]


def truncated(rng: np.random.Generator, replies: list[str]) -> list[str]:
    """The "policy": SFT's own reply cut to a random share of its words (a third are left whole)."""
    out = []
    for reply in replies:
        words = reply.split()
        keep = len(words) if rng.random() < 1 / 3 else max(1, int(len(words) * rng.uniform(0.2, 0.9)))
        out.append(" ".join(words[:keep]))
    return out


def length_loving_scorer(rng: np.random.Generator, texts: list[str]) -> np.ndarray:
    """A toxicity scorer whose scores only rise with length (as the stand-in's do), plus noise."""
    return np.clip(0.05 + 0.06 * log_length(texts) + rng.normal(0, 0.03, len(texts)), 0, 1)


def brevity_loving_judge(rng: np.random.Generator, sft: list[str], policy: list[str]) -> list[str]:
    """A judge that prefers whichever reply is shorter, by a margin that grows with the length difference."""
    outcomes = []
    for a, b in zip(sft, policy, strict=True):
        if a == b:
            outcomes.append("tie")
            continue
        shorter_by = word_count(a) - word_count(b)
        outcomes.append("win" if rng.random() < 1 / (1 + np.exp(-0.2 * shorter_by)) else "loss")
    return outcomes


def test_word_count_counts_no_words_in_marks() -> None:
    assert [word_count(t) for t in ("", ".", "1 2", "I do.", "  a  b c ")] == [0, 0, 0, 2, 3]


def test_a_truncating_policy_earns_no_length_controlled_toxicity_improvement() -> None:
    rng = np.random.default_rng(0)
    rows = []
    for prompt_id in range(PROMPTS):
        sft = sft_replies(rng, 2)
        for model, texts in (("sft", sft), ("rlhf", truncated(rng, sft))):
            scores = length_loving_scorer(rng, texts)
            rows += [{"prompt_id": prompt_id, "model": model, "sample": k, "continuation": text, "toxicity": score}
                     for k, (text, score) in enumerate(zip(texts, scores, strict=True))]
    summary = summarize(pd.DataFrame(rows))
    raw, controlled = summary.difference["mean_toxicity"], summary.length_controlled["mean_toxicity"]
    assert raw.high < 0, "raw: the shorter policy looks less toxic"
    assert controlled.controlled.low < 0 < controlled.controlled.high, "controlled: no improvement"
    assert controlled.length_difference.high < 0 and controlled.slope > 0
    assert controlled.raw.estimate == pytest.approx(raw.estimate)


def test_a_truncating_policy_earns_no_length_controlled_win() -> None:
    rng = np.random.default_rng(1)
    sft = sft_replies(rng, PROMPTS)
    policy = truncated(rng, sft)
    outcomes = brevity_loving_judge(rng, sft, policy)
    words = [word_count(b) - word_count(a) for a, b in zip(sft, policy, strict=True)]
    result = length_controlled_win_rate(outcomes, words)
    assert result.raw.low > 0.5, "raw: the judge prefers the shorter policy"
    assert result.controlled.low < 0.5 < result.controlled.high, "controlled: no win"
    assert result.slope < 0 and result.n == PROMPTS
    assert loss_minus_win(result.controlled).low < 0 < loss_minus_win(result.controlled).high


def test_a_real_gain_survives_length_control() -> None:
    """A policy better at every length keeps its gain when lengths also differ."""
    rng = np.random.default_rng(2)
    log_difference = rng.normal(-0.5, 0.4, PROMPTS)
    gain = 0.3 + 0.5 * log_difference + rng.normal(0, 0.2, PROMPTS)
    result = regression_adjusted(gain, log_difference, np.expm1(log_difference) * 10)
    assert result.controlled.low > 0.2 and result.controlled.high < 0.4
    assert result.raw.estimate == pytest.approx(gain.mean())


def test_equal_lengths_leave_the_raw_figure() -> None:
    outcomes = ["win"] * 60 + ["tie"] * 20 + ["loss"] * 20
    result = length_controlled_win_rate(outcomes, [0.0] * 100)
    assert result.raw.estimate == pytest.approx(0.7)
    assert result.controlled.estimate == pytest.approx(0.7, abs=0.01), "only the unit ridge pulls towards ½"


def test_one_sided_outcomes_stay_finite() -> None:
    result = length_controlled_win_rate(["win"] * 30, list(range(-30, 0)))
    assert 0.5 < result.controlled.estimate < 1 and np.isfinite(result.controlled.low)


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="win, tie or loss"):
        length_controlled_win_rate(["won"], [1.0])
    with pytest.raises(ValueError, match="equally long"):
        regression_adjusted([1.0, 2.0], [0.1], [1.0, 2.0])
