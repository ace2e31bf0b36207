"""Prompt sets for toxicity evaluation beyond RealToxicityPrompts: declared in a YAML file, read from any source.

A prompt set is a list of texts every policy and SFT continue, scored by the same Detoxify scorer and summarized
by the same metrics as RealToxicityPrompts (a red-team set, a domain's own prompts). Users declare them in
`prompt_sets.yaml` (or the file `RLHF_PROMPT_SETS` names):

    prompt_sets:
      - name: red_team
        source: examples/red_team_prompts.jsonl   # relative paths are from the YAML file's folder
        text_field: prompt                        # dotted for nested fields: prompt.text
        template: "\\n\\nHuman: {text}\\n\\nAssistant:"

A source is a `.jsonl` / `.jsonl.gz` / `.csv` / `.txt` (one prompt per line) file, a folder of such files, a saved
`datasets` directory or a hub dataset id. A row whose text field is missing, not text or empty fails with the file,
line and field named.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rlhf_assets.data.hh import DataError, RawRecord, read_jsonl
from rlhf_assets.data.sources import JSONL_SUFFIXES, iter_source_records

PROMPT_FILE_SUFFIXES = (*JSONL_SUFFIXES, ".csv", ".txt")
RTP = "rtp"  # RealToxicityPrompts, the recipe's prompt set: its own assets (`rtp_prompts`, `toxicity_scores`)


class PromptSetSpec(BaseModel):
    """One declared prompt set: where its texts are, which field holds them, and how many are used."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,39}$", description="Names its assets: `<name>_prompts` and each "
                      "policy's `<name>_toxicity_scores`")
    source: str = Field(description="A .jsonl/.jsonl.gz/.csv/.txt file, a folder of them, a saved dataset directory "
                        "or a hub dataset id")
    text_field: str = Field("prompt", min_length=1, description="Field holding the prompt text, dotted for nested "
                            "fields (prompt.text); ignored for .txt files")
    template: str = Field("{text}", description="How each text is put to the models; {text} is replaced (e.g. an "
                          "HH dialogue turn, so an assistant answers it)")
    hub_split: str = Field("train", description="Split to read from a hub or saved dataset")
    num_prompts: int | None = Field(None, ge=1, description="Sample this many distinct prompts with `seed`; None: "
                                    "all of them")
    seed: int = Field(0, description="Seed of the sample")
    description: str = Field("", description="What the set probes, shown on its assets")

    @field_validator("template")
    @classmethod
    def _has_text(cls, template: str) -> str:
        if template.count("{text}") != 1:
            raise ValueError("must contain {text} exactly once")
        return template

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, name: str) -> str:
        if name == RTP:
            raise ValueError(f"{name!r} is reserved (RealToxicityPrompts has its own assets)")
        return name

    def prompt(self, text: str) -> str:
        return self.template.replace("{text}", text)


class PromptSetsFile(BaseModel):
    """The declaration file: a list of prompt sets with distinct names."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt_sets: tuple[PromptSetSpec, ...] = ()

    @model_validator(mode="after")
    def _distinct(self) -> PromptSetsFile:
        names = [spec.name for spec in self.prompt_sets]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"prompt set names must be distinct: {', '.join(repeated)} repeated")
        return self


def load_prompt_sets(path: Path) -> tuple[PromptSetSpec, ...]:
    """The prompt sets `path` declares, with relative local sources resolved against its folder.

    Errors name the file and the entry, so a typo is found when the code location loads, not mid-run.
    """
    if not path.exists():
        raise DataError(str(path), None, None, "prompt-set file does not exist")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise DataError(str(path), None, None, f"not valid YAML ({exc})") from None
    try:
        declared = PromptSetsFile.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise DataError(str(path), None, where, first["msg"]) from None
    return tuple(spec.model_copy(update={"source": _resolved(spec.source, path.parent)})
                 for spec in declared.prompt_sets)


def _resolved(source: str, base: Path) -> str:
    """A relative source that exists beside the YAML file becomes absolute; anything else (a hub id) is kept."""
    candidate = Path(source).expanduser()
    if not candidate.is_absolute() and (base / candidate).exists():
        return str((base / candidate).resolve())
    return source


@dataclass(frozen=True)
class PromptRecord:
    """One prompt as read, with where it came from."""

    source_file: str
    source_line: int
    text: str


def _field(record: RawRecord, dotted: str) -> Any:
    """The field named `dotted` (a CSV column may be called `prompt.text`), else the nested path it spells."""
    if dotted in record.fields:
        return record.fields[dotted]
    value: Any = record.fields
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _text(source: str, record: RawRecord, dotted: str) -> str:
    value = _field(record, dotted)
    if value is None:
        raise DataError(source, record.line, dotted, "missing")
    if not isinstance(value, str):
        raise DataError(source, record.line, dotted, f"expected text, got {type(value).__name__} ({value!r:.40})")
    if not value.strip():
        raise DataError(source, record.line, dotted, "empty")
    return value


def _csv_records(path: Path) -> Iterator[RawRecord]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            for row in reader:
                yield RawRecord(reader.line_num, {k: v for k, v in row.items() if k is not None})
    except UnicodeDecodeError as exc:
        raise DataError(str(path), None, None, f"not valid UTF-8 ({exc.reason})") from None


def _file_prompts(path: Path, text_field: str) -> Iterator[PromptRecord]:
    name = path.name
    if path.suffix == ".txt":
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as exc:
            raise DataError(str(path), None, None, f"not valid UTF-8 ({exc.reason})") from None
        yield from (PromptRecord(name, number, line) for number, line in enumerate(lines, start=1) if line.strip())
        return
    records = _csv_records(path) if path.suffix == ".csv" else read_jsonl(path)
    for record in records:
        yield PromptRecord(name, record.line, _text(str(path), record, text_field))


def read_prompt_set(spec: PromptSetSpec) -> list[PromptRecord]:
    """Every prompt of the set's source, validated; a source without prompts is an error."""
    path = Path(spec.source).expanduser()
    if path.is_file():
        if not path.name.endswith(PROMPT_FILE_SUFFIXES):
            raise DataError(spec.source, None, None, f"unknown file type: expected one of "
                            f"{', '.join(PROMPT_FILE_SUFFIXES)}")
        prompts = list(_file_prompts(path, spec.text_field))
    elif path.is_dir() and (files := sorted(p for p in path.iterdir() if p.name.endswith(PROMPT_FILE_SUFFIXES))):
        prompts = [prompt for file in files for prompt in _file_prompts(file, spec.text_field)]
    else:
        prompts = [PromptRecord(spec.source, record.line, _text(spec.source, record, spec.text_field))
                   for record in iter_source_records(spec.source, spec.hub_split)]
    if not prompts:
        raise DataError(spec.source, None, None, f"prompt set {spec.name!r} has no prompts")
    return prompts


def normalized(text: str) -> str:
    """The text with runs of whitespace collapsed, so trivially re-spaced duplicates count once."""
    return re.sub(r"\s+", " ", text).strip()
