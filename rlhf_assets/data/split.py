"""Deterministic, prompt-keyed train/test split and the held-out evaluation prompts.

The split is a pure function of the prompt text (a SHA-256 bucket), so it never changes when rows are added
or reordered, and a prompt with several preference pairs lands wholly on one side: no train/test leakage.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence

from rlhf_assets.data.hh import PreferencePair

_BUCKETS = 10_000


def prompt_bucket(prompt: str) -> int:
    """Stable bucket in [0, 10000) for a prompt; the same on every machine and Python version."""
    digest = hashlib.sha256(prompt.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % _BUCKETS


def is_test_prompt(prompt: str, test_fraction: float) -> bool:
    """Whether a prompt belongs to the held-out side for the given test share."""
    return prompt_bucket(prompt) < round(test_fraction * _BUCKETS)


def is_judge_prompt(prompt: str, test_fraction: float, judge_fraction: float) -> bool:
    """Whether a training-side prompt is set aside for the independent judge: the buckets just above the test
    buckets, so the three sides are disjoint and stable as rows are added."""
    bucket = prompt_bucket(prompt)
    return round(test_fraction * _BUCKETS) <= bucket < round((test_fraction + judge_fraction) * _BUCKETS)


def split_pairs(
    pairs: Sequence[PreferencePair], test_fraction: float
) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """Split into (train, test) by prompt hash, keeping the input order within each side."""
    train, test = [], []
    for pair in pairs:
        (test if is_test_prompt(pair.prompt, test_fraction) else train).append(pair)
    return train, test


def split_heldout(
    train_side: Sequence[PreferencePair], heldout: Sequence[PreferencePair], test_fraction: float
) -> tuple[list[PreferencePair], list[PreferencePair], list[PreferencePair]]:
    """(train, test, judge) when the source has its own held-out split (rm-static's `test`).

    The held-out split is divided by prompt hash into test (`test_fraction` of it) and the judge's training
    pairs; a training-side pair whose prompt also occurs in the held-out split is dropped, so no prompt is on
    both sides.
    """
    heldout_prompts = {pair.prompt for pair in heldout}
    train = [pair for pair in train_side if pair.prompt not in heldout_prompts]
    test = [pair for pair in heldout if is_test_prompt(pair.prompt, test_fraction)]
    judge = [pair for pair in heldout if not is_test_prompt(pair.prompt, test_fraction)]
    return train, test, judge


def choose_eval_prompts(test: Sequence[PreferencePair], count: int, seed: int) -> list[PreferencePair]:
    """Pick `count` distinct held-out prompts with a seeded RNG over a sorted pool (order-independent).

    Each chosen prompt keeps its first preference pair so evaluation can show the human-preferred answer.
    """
    by_prompt: dict[str, PreferencePair] = {}
    for pair in test:
        by_prompt.setdefault(pair.prompt, pair)
    pool = sorted(by_prompt)
    if len(pool) < count:
        raise ValueError(
            f"only {len(pool)} distinct held-out prompts, {count} eval prompts requested: "
            "raise test_fraction or lower eval_prompt_count"
        )
    return [by_prompt[p] for p in random.Random(seed).sample(pool, count)]
