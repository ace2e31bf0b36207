"""Deterministic, conversation-keyed train/test/judge split and the held-out evaluation prompts.

HH dialogues branch: one conversation opening (the first human turn) continues in several dialogues, and a
dialogue's earlier turns are often another row's whole prompt. Splitting by the exact prompt string would put
"Human: How do I pick a lock? Assistant:" in test and the same opening, followed by a human-written reply, in
training. So the split is keyed by the conversation's opening (`conversation_opening`: the first human turn,
case and whitespace normalised): every dialogue that shares an opening lands on one side, and since a prompt is
a prefix of another only when both share their opening, no test or eval prompt is a prefix of a training or
judge dialogue either (`SPLIT_RULE`). The key is a SHA-256 bucket of the opening, so the split never changes
when rows are added or reordered.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rlhf_assets.data.hh import PreferencePair

_BUCKETS = 10_000
SPLIT_RULE = ("by conversation: dialogues sharing an opening (the first human turn, lower-cased, whitespace "
              "collapsed) fall on one side, so no held-out prompt shares an opening with, or is a prefix of, a "
              "training or judge dialogue")


def conversation_opening(prompt: str) -> str:
    """The dialogue's first human turn, normalised: the key every dialogue continuing it is split by."""
    _, found, rest = prompt.partition("Human:")
    turn = (rest if found else prompt).split("\n\nAssistant:", 1)[0]
    return re.sub(r"\s+", " ", turn).strip().lower()


def prompt_bucket(prompt: str) -> int:
    """Stable bucket in [0, 10000) for a prompt; the same on every machine and Python version."""
    digest = hashlib.sha256(prompt.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % _BUCKETS


def is_test_prompt(prompt: str, test_fraction: float) -> bool:
    """Whether a prompt's conversation belongs to the held-out side for the given test share."""
    return prompt_bucket(conversation_opening(prompt)) < round(test_fraction * _BUCKETS)


def is_judge_prompt(prompt: str, test_fraction: float, judge_fraction: float) -> bool:
    """Whether a training-side conversation is set aside for the independent judge: the buckets just above the
    test buckets, so the three sides are disjoint and stable as rows are added."""
    bucket = prompt_bucket(conversation_opening(prompt))
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

    The held-out split is divided by conversation into test (`test_fraction` of it) and the judge's training
    pairs; a training-side pair whose conversation opening also occurs in the held-out split is dropped, so no
    conversation is on both sides.
    """
    heldout_openings = {conversation_opening(pair.prompt) for pair in heldout}
    train = [pair for pair in train_side if conversation_opening(pair.prompt) not in heldout_openings]
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


@dataclass(frozen=True)
class SplitRelations:
    """How held-out prompts relate to another side's dialogues: what the conversation split must keep at 0."""

    shared_openings: int  # held-out prompts whose opening starts a dialogue on the other side
    prefixes: int  # held-out prompts that are a prefix of another side's dialogue, or have one as a prefix

    @property
    def total(self) -> int:
        return self.shared_openings + self.prefixes


def split_relations(heldout: Iterable[str], other: Iterable[str]) -> SplitRelations:
    """Count the held-out prompts related to the other side's prompts by a shared opening or a prefix.

    A prompt is a prefix of another only if both have the same opening, so prefixes are looked for within each
    opening's dialogues only.
    """
    by_opening: dict[str, list[str]] = {}
    for prompt in set(other):
        by_opening.setdefault(conversation_opening(prompt), []).append(prompt)
    shared = prefixes = 0
    for prompt in set(heldout):
        related = by_opening.get(conversation_opening(prompt), [])
        shared += bool(related)
        prefixes += any(o != prompt and (o.startswith(prompt) or prompt.startswith(o)) for o in related)
    return SplitRelations(shared_openings=shared, prefixes=prefixes)
