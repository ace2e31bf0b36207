"""Evaluation statistics against hand-computed values: toxicity metrics, Wilson intervals, judge, AUC."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from rlhf_assets.eval.bootstrap import bootstrap_mean
from rlhf_assets.eval.classifier_quality import correlations, roc_auc
from rlhf_assets.eval.degenerate_text import response_stats, wordless_as_non_toxic
from rlhf_assets.eval.preference import judge_by_margin, summarize_outcomes, wilson_interval
from rlhf_assets.eval.reporting import interval_text
from rlhf_assets.eval.toxicity import METRICS, per_prompt, summarize
from rlhf_assets.presets import SHARED_RTP_DIR, TINY

pytestmark = pytest.mark.unit


def _scores(values: dict[str, list[list[float]]]) -> pd.DataFrame:
    return pd.DataFrame([{"prompt_id": p, "model": model, "sample": k, "toxicity": t}
                         for model, prompts in values.items() for p, samples in enumerate(prompts)
                         for k, t in enumerate(samples)])


def test_gehman_metrics_per_prompt_and_overall() -> None:
    scores = _scores({"sft": [[0.1, 0.7], [0.2, 0.4]], "rlhf": [[0.1, 0.3], [0.2, 0.2]]})
    table = per_prompt(scores).set_index(["model", "prompt_id"])[list(METRICS)]
    assert table.loc[("sft", 0)].tolist() == pytest.approx([0.4, 0.7, 1.0])
    assert table.loc[("sft", 1)].tolist() == pytest.approx([0.3, 0.4, 0.0])
    summary = summarize(scores)
    assert summary.per_model["sft"]["mean_toxicity"].estimate == pytest.approx(0.35)
    assert summary.per_model["sft"]["expected_max_toxicity"].estimate == pytest.approx(0.55)
    assert summary.per_model["sft"]["toxicity_probability"].estimate == pytest.approx(0.5)
    assert summary.per_model["rlhf"]["mean_toxicity"].estimate == pytest.approx(0.2)
    assert summary.difference["mean_toxicity"].estimate == pytest.approx(-0.15)
    assert summary.difference["expected_max_toxicity"].estimate == pytest.approx(-0.3)
    assert summary.prompts == 2 and summary.samples_per_prompt == 2
    interval = summary.difference["mean_toxicity"]
    assert interval.low <= interval.estimate <= interval.high


def test_unequal_samples_or_prompts_are_refused() -> None:
    with pytest.raises(ValueError, match="same number of samples"):
        summarize(_scores({"sft": [[0.1, 0.2]], "rlhf": [[0.1]]}))
    with pytest.raises(ValueError, match="same prompts"):
        summarize(_scores({"sft": [[0.1], [0.2]], "rlhf": [[0.1]]}).query("not (model == 'rlhf' and prompt_id == 1)"))


def test_wilson_interval_matches_published_values() -> None:
    recipe = wilson_interval(84, 100)
    assert (recipe.low, recipe.high) == pytest.approx((0.7558, 0.8990), abs=1e-4)
    none = wilson_interval(0, 10)
    assert none.low == pytest.approx(0.0) and none.high == pytest.approx(0.2775, abs=1e-4)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_judge_by_margin_and_outcome_counts() -> None:
    outcomes = judge_by_margin([0.0, 0.0, 0.0, 1.0], [0.05, 0.2, -0.3, 1.05], margin=0.1)
    assert outcomes == ["tie", "win", "loss", "tie"]
    summary = summarize_outcomes(outcomes)
    assert (summary.wins, summary.ties, summary.losses) == (1, 2, 1)
    assert summary.win_or_tie_rate.estimate == pytest.approx(0.75)


def test_roc_auc_and_correlations() -> None:
    assert roc_auc([True, False, True, False], [0.9, 0.1, 0.4, 0.5]) == pytest.approx(0.75)
    assert roc_auc([True, False], [0.5, 0.5]) == pytest.approx(0.5)
    pearson, spearman = correlations([1, 2, 3, 4], [1, 2, 3, 10])
    assert spearman == pytest.approx(1.0) and 0.8 < pearson < 1.0


def test_response_stats_flag_empty_and_repeated_answers() -> None:
    stats = response_stats(["hello there", "", "hello there", "a b c d"])
    assert stats.empty_share == 0.25 and stats.duplicate_share == 0.25
    assert stats.mean_words == pytest.approx((2 + 0 + 2 + 4) / 4)
    assert stats.short_share == 0.75


def test_punctuation_and_digits_count_as_empty() -> None:
    """Issue 16 (4): "." used to count as a non-empty answer of one word."""
    stats = response_stats([".", "!!", "42", "  ", "I can help with that today."])
    assert stats.empty_share == 0.8 and stats.short_share == 0.8
    assert stats.mean_words == pytest.approx(6 / 5)


def test_the_bootstrap_resamples_prompts_so_clustered_samples_widen_the_interval() -> None:
    """k continuations of one prompt are not k independent observations: with prompt-level clusters (samples of a
    prompt alike, prompts different) the interval over prompts is about sqrt(k) wider than a naive interval that
    treats every continuation as independent."""
    rng = np.random.default_rng(0)
    prompt_level = rng.uniform(0, 1, size=100)
    rows = [{"prompt_id": p, "model": model, "sample": k, "toxicity": float(prompt_level[p]) + shift}
            for p in range(100) for model, shift in (("sft", 0.0), ("rlhf", 0.01)) for k in range(4)]
    summary = summarize(pd.DataFrame(rows))
    clustered = summary.per_model["sft"]["mean_toxicity"]
    naive = bootstrap_mean(np.repeat(prompt_level, 4))
    assert (clustered.high - clustered.low) / (naive.high - naive.low) == pytest.approx(2.0, rel=0.15)
    difference = summary.difference["mean_toxicity"]
    assert difference.low == pytest.approx(0.01) and difference.high == pytest.approx(0.01), "paired by prompt"


def test_intervals_are_printed_to_the_precision_they_support() -> None:
    assert interval_text(0.1291847362, 0.1188, 0.1402) == "0.129 [0.119, 0.140]"
    assert interval_text(0.27, 0.2, 0.34, signed=True) == "+0.27 [+0.20, +0.34]"
    assert interval_text(0.84, 0.755, 0.905, percent=True) == "84% [76%, 90%]"
    assert interval_text(0.0021, -0.0102, 0.0144, signed=True) == "+0.002 [-0.010, +0.014]"


def test_the_stand_in_rule_zeroes_only_text_without_a_letter() -> None:
    texts = ["", "!!!", "42", "you idiot", "a"]
    assert wordless_as_non_toxic(texts, [0.3, 0.26, 0.2, 0.9, 0.1]) == [0.0, 0.0, 0.0, 0.9, 0.1]


def test_the_stand_in_vocabulary_is_the_same_in_every_process() -> None:
    """Issue 16 (6), one source found: `tokenizers`' WordPiece trainer breaks frequency ties by a per-process
    hash seed, so two runs on the RTP texts gave different vocabularies and different stand-in scorers."""
    if not SHARED_RTP_DIR.exists():
        pytest.skip(f"RealToxicityPrompts records not found at {SHARED_RTP_DIR} (../shared/data is provided in CI)")
    script = ("import gzip, hashlib, json, sys; from pathlib import Path; "
              "from rlhf_assets.presets import TINY; "
              "from rlhf_assets.modeling.standin_vocabulary import standin_tokenizer; "
              "rows = [json.loads(line) for f in sorted(Path(sys.argv[1]).glob('*.jsonl.gz')) "
              "for line in gzip.open(f, 'rt')]; "
              "texts = [r['prompt']['text'] for r in rows] + [(r.get('continuation') or {}).get('text') or '' "
              "for r in rows]; "
              "spec = TINY.toxicity.standin; tokenizer = standin_tokenizer(texts, spec.vocab_size, spec.max_length); "
              "print(len(tokenizer), hashlib.sha256(repr(sorted(tokenizer.get_vocab().items())).encode()).hexdigest(), "
              "tokenizer.tokenize('an unseenword!'))")
    runs = {subprocess.run([sys.executable, "-c", script, str(SHARED_RTP_DIR)], capture_output=True, text=True,
                           check=True).stdout for _ in range(3)}
    assert len(runs) == 1, runs
    size, _, pieces = runs.pop().split(" ", 2)
    assert int(size) <= TINY.toxicity.standin.vocab_size and "[UNK]" not in pieces
