"""Anthropic HH dialogues -> the `Dahoas/rm-static` preference schema.

HH rows are two whole dialogues (`chosen`, `rejected`) that should share every turn but the last Assistant
turn. rm-static rows split that into `prompt` (everything up to and including the final `\\n\\nAssistant:`),
`response`/`chosen` (the preferred final turn) and `rejected`. Irregular rows are dropped with a reason, never
silently; malformed rows raise `DataError` naming the file, line and field.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ASSISTANT_TAG = "\n\nAssistant:"
RM_STATIC_COLUMNS = ("prompt", "response", "chosen", "rejected")


class DataError(ValueError):
    """Bad input data; the message names the file, the line and the field."""

    def __init__(self, source: str, line: int | None, field_name: str | None, problem: str) -> None:
        where = source if line is None else f"{source}, line {line}"
        if field_name:
            where = f"{where}, field {field_name!r}"
        super().__init__(f"{where}: {problem}")
        self.source, self.line, self.field_name, self.problem = source, line, field_name, problem


@dataclass(frozen=True)
class RawRecord:
    """One source row, kept with its line number so later errors and drops can point back at it."""

    line: int
    fields: dict[str, str]


@dataclass(frozen=True)
class PreferencePair:
    """A row in rm-static form; `response` equals `chosen`, as in the published dataset."""

    prompt: str
    chosen: str
    rejected: str
    source_line: int

    def as_row(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "response": self.chosen,
            "chosen": self.chosen,
            "rejected": self.rejected,
            "source_line": self.source_line,
        }


@dataclass
class MappingReport:
    """What the mapping kept and what it dropped, by reason, with the first few line numbers per reason."""

    kept: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[int]] = field(default_factory=dict)

    def drop(self, reason: str, line: int) -> None:
        self.dropped[reason] += 1
        self.examples.setdefault(reason, [])
        if len(self.examples[reason]) < 5:
            self.examples[reason].append(line)

    def merged(self, other: MappingReport) -> MappingReport:
        """Both reports' counts: one table for a source read in two splits."""
        examples = {reason: (self.examples.get(reason, []) + other.examples.get(reason, []))[:5]
                    for reason in {*self.examples, *other.examples}}
        return MappingReport(self.kept + other.kept, self.dropped + other.dropped, examples)


MAX_LINE_BYTES = 16 * 1024 * 1024


def read_jsonl(path: Path) -> Iterator[RawRecord]:
    """Stream a `.jsonl` or `.jsonl.gz` file, failing with file and line on bad JSON, bad UTF-8 or bad gzip.

    A line longer than `MAX_LINE_BYTES` (a lost newline, a binary file) is refused before it fills memory.
    """
    if not path.exists():
        raise DataError(str(path), None, None, "file does not exist")
    if path.is_dir():
        raise DataError(str(path), None, None, "is a directory, expected a .jsonl or .jsonl.gz file")
    opener = gzip.open if path.suffix == ".gz" else open
    line_no = 0
    try:
        with opener(path, "rb") as handle:
            for line_no, raw in enumerate(iter(lambda: handle.readline(MAX_LINE_BYTES + 1), b""), start=1):
                if len(raw) > MAX_LINE_BYTES:
                    raise DataError(str(path), line_no, None, f"line is longer than {MAX_LINE_BYTES >> 20} MiB "
                                    "(a lost newline or not a JSON Lines file?)")
                if not raw.strip():
                    continue
                try:
                    obj = json.loads(raw.decode("utf-8"))
                except UnicodeDecodeError as exc:
                    raise DataError(str(path), line_no, None, f"not valid UTF-8 ({exc.reason})") from None
                except json.JSONDecodeError as exc:
                    raise DataError(str(path), line_no, None, f"malformed JSON ({exc.msg})") from None
                except RecursionError:
                    raise DataError(str(path), line_no, None, "JSON nested too deeply") from None
                if not isinstance(obj, dict):
                    raise DataError(str(path), line_no, None, f"expected a JSON object, got {type(obj).__name__}")
                yield RawRecord(line_no, obj)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(str(path), line_no + 1, None, f"gzip stream is corrupt or truncated ({exc})") from None
    if line_no == 0:
        raise DataError(str(path), None, None, "file is empty")


def text_field(record: RawRecord, name: str, source: str) -> str:
    """A required string field of a row, or a `DataError` naming file, line and field."""
    if name not in record.fields:
        raise DataError(source, record.line, name, "missing")
    value = record.fields[name]
    if not isinstance(value, str):
        raise DataError(source, record.line, name, f"expected a string, got {type(value).__name__}")
    return value


def split_dialogue(dialogue: str) -> tuple[str, str] | None:
    """Cut an HH dialogue at its last Assistant tag: (prompt ending in the tag, final response)."""
    cut = dialogue.rfind(ASSISTANT_TAG)
    if cut < 0:
        return None
    end = cut + len(ASSISTANT_TAG)
    return dialogue[:end], dialogue[end:]


def to_preference_pairs(
    records: Iterable[RawRecord], source: str
) -> tuple[list[PreferencePair], MappingReport]:
    """Map raw rows (HH dialogues or rows already in rm-static form) to preference pairs.

    Irregular rows are part of real preference data (the shared HH test file has nine); they are dropped with
    a reason so the counts show up in the asset's metadata instead of silently skewing training.
    """
    report = MappingReport()
    pairs: list[PreferencePair] = []
    seen: set[tuple[str, str, str]] = set()
    for record in records:
        chosen_full = text_field(record, "chosen", source)
        rejected_full = text_field(record, "rejected", source)
        if "prompt" in record.fields:
            prompt = text_field(record, "prompt", source)
            chosen, rejected = chosen_full, rejected_full
        else:
            chosen_split, rejected_split = split_dialogue(chosen_full), split_dialogue(rejected_full)
            if chosen_split is None or rejected_split is None:
                report.drop("no_assistant_turn", record.line)
                continue
            (prompt, chosen), (rejected_prompt, rejected) = chosen_split, rejected_split
            if prompt != rejected_prompt:
                report.drop("dialogues_differ_before_last_turn", record.line)
                continue
        if not prompt.strip():
            report.drop("empty_prompt", record.line)
        elif not chosen.strip():
            report.drop("empty_chosen", record.line)
        elif not rejected.strip():
            report.drop("empty_rejected", record.line)
        elif chosen.strip() == rejected.strip():
            report.drop("chosen_equals_rejected", record.line)
        elif (prompt, chosen, rejected) in seen:
            report.drop("duplicate_row", record.line)
        else:
            seen.add((prompt, chosen, rejected))
            pairs.append(PreferencePair(prompt, chosen, rejected, record.line))
            report.kept += 1
    return pairs, report
