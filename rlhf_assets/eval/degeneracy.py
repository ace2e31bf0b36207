"""Signs that a model's responses degenerated: empty answers, the same answer everywhere, very short ones."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ResponseStats:
    responses: int
    empty_share: float
    duplicate_share: float  # share of responses that repeat an earlier one word for word
    mean_words: float


def response_stats(responses: Sequence[str]) -> ResponseStats:
    """Empty share, duplicate share and mean length in words of one model's responses."""
    if not responses:
        raise ValueError("no responses")
    stripped = [r.strip() for r in responses]
    return ResponseStats(
        responses=len(stripped),
        empty_share=sum(not r for r in stripped) / len(stripped),
        duplicate_share=1 - len(set(stripped)) / len(stripped),
        mean_words=sum(len(r.split()) for r in stripped) / len(stripped),
    )
