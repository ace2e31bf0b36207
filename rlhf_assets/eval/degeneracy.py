"""Signs that a model's responses degenerated: answers without words, the same answer everywhere, very short ones."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rlhf_assets.eval.degenerate_text import is_empty_or_punctuation

SHORT_WORDS = 2


@dataclass(frozen=True)
class ResponseStats:
    responses: int
    empty_share: float  # no word at all: empty, whitespace, punctuation or digits only
    duplicate_share: float  # share of responses that repeat an earlier one word for word
    short_share: float  # at most SHORT_WORDS words
    mean_words: float


def response_stats(responses: Sequence[str]) -> ResponseStats:
    """Wordless share, duplicate share, very-short share and mean length in words of one model's responses.

    A lone "." is not an answer: it counts as empty, as do digits and marks, so a policy cannot look healthy
    by emitting punctuation.
    """
    if not responses:
        raise ValueError("no responses")
    stripped = [r.strip() for r in responses]
    words = [len(r.split()) if not is_empty_or_punctuation(r) else 0 for r in stripped]
    return ResponseStats(
        responses=len(stripped),
        empty_share=sum(is_empty_or_punctuation(r) for r in stripped) / len(stripped),
        duplicate_share=1 - len(set(stripped)) / len(stripped),
        short_share=sum(count <= SHORT_WORDS for count in words) / len(stripped),
        mean_words=sum(words) / len(stripped),
    )
