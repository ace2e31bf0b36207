"""RealToxicityPrompts records (Gehman et al. 2020) as flat, validated rows.

Each source record is `{"challenging", "prompt": {"text", "toxicity", ...}, "continuation": {...}}` with
Perspective API probabilities (a few are null). Sources: the hub dataset `allenai/real-toxicity-prompts`,
a local dataset directory, a `.jsonl(.gz)` file, or a directory of such files (the shared test data). A record
with no prompt text or a score that is not a probability in [0, 1] (NaN, Infinity, 7.5, −3) fails with the
file, line and field named.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf_assets.data.hh import DataError, RawRecord, read_jsonl
from rlhf_assets.data.sources import JSONL_SUFFIXES, iter_source_records

HUB_DATASET = "allenai/real-toxicity-prompts"
PERSPECTIVE_ATTRIBUTES = (
    "toxicity", "severe_toxicity", "profanity", "insult", "threat", "identity_attack", "sexually_explicit",
    "flirtation",
)


@dataclass(frozen=True)
class RTPRow:
    """One record, flattened: `prompt_text`, `prompt_toxicity`, …, `continuation_text`, … (scores may be None)."""

    source_file: str
    source_line: int
    challenging: bool
    prompt: dict[str, Any]
    continuation: dict[str, Any]

    def as_row(self) -> dict[str, Any]:
        row: dict[str, Any] = {"source_file": self.source_file, "source_line": self.source_line,
                               "challenging": self.challenging}
        for part, values in (("prompt", self.prompt), ("continuation", self.continuation)):
            row[f"{part}_text"] = values["text"]
            for attribute in PERSPECTIVE_ATTRIBUTES:
                row[f"{part}_{attribute}"] = values.get(attribute)
        return row


def iter_rtp_records(source: str, split: str = "train") -> Iterator[tuple[str, RawRecord]]:
    """(file name, raw record) from a JSONL file, a directory of JSONL files, a saved dataset or the hub."""
    path = Path(source).expanduser()
    files = sorted(p for p in path.iterdir() if p.name.endswith(JSONL_SUFFIXES)) if path.is_dir() else []
    if files:
        for file in files:
            for record in read_jsonl(file):
                yield str(file), record
        return
    for record in iter_source_records(source, split):
        yield source, record


def _scores(source: str, record: RawRecord, part: str, require_text: bool) -> dict[str, Any]:
    value = record.fields.get(part)
    if value is None and not require_text:
        return {"text": ""}
    if not isinstance(value, dict):
        problem = "missing" if value is None else f"expected an object, got {type(value).__name__}"
        raise DataError(source, record.line, part, problem)
    text = value.get("text")
    if not isinstance(text, str) or (require_text and not text.strip()):
        problem = "missing" if text is None else "empty" if isinstance(text, str) else f"not a string ({text!r})"
        raise DataError(source, record.line, f"{part}.text", problem)
    scores: dict[str, Any] = {"text": text}
    for attribute in PERSPECTIVE_ATTRIBUTES:
        score = value.get(attribute)
        if score is not None and (isinstance(score, bool) or not isinstance(score, int | float)
                                  or not math.isfinite(score) or not 0.0 <= score <= 1.0):
            raise DataError(source, record.line, f"{part}.{attribute}",
                            f"expected a Perspective probability in [0, 1] or null, got {score!r}")
        scores[attribute] = None if score is None else float(score)
    return scores


def parse_rtp_record(source: str, record: RawRecord) -> RTPRow:
    """Validate one record: `prompt.text` must be non-empty text and every score a number or null."""
    challenging = record.fields.get("challenging", False)
    if not isinstance(challenging, bool):
        raise DataError(source, record.line, "challenging", f"expected true or false, got {challenging!r}")
    return RTPRow(
        source_file=Path(source).name,
        source_line=record.line,
        challenging=challenging,
        prompt=_scores(source, record, "prompt", require_text=True),
        continuation=_scores(source, record, "continuation", require_text=False),
    )


def read_rtp(source: str, split: str = "train") -> list[RTPRow]:
    """Every record of `source`, validated; a source with no records is an error."""
    rows = [parse_rtp_record(name, record) for name, record in iter_rtp_records(source, split)]
    if not rows:
        raise DataError(source, None, None, "no RealToxicityPrompts records found")
    return rows
