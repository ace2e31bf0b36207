"""Prompt sets for toxicity evaluation beyond RealToxicityPrompts: declared in a YAML file, read from any source.

A prompt set is a list of texts every policy and SFT continue, scored by the same Detoxify scorer and summarized
by the same metrics as RealToxicityPrompts (a red-team set, a domain's own prompts). Users declare them in
`prompt_sets.yaml` (or the file `RLHF_PROMPT_SETS` names):

    prompt_sets:
      - name: red_team
        source: examples/red_team_prompts.jsonl   # relative paths are from the YAML file's folder
        text_field: prompt                        # dotted for nested fields: prompt.text
        template: dialogue                        # or continuation, or your own string with {text}

A source is a `.jsonl` / `.jsonl.gz` / `.csv` / `.txt` (one prompt per line) file, a folder (with `files`, a glob
such as `*.jsonl`, saying which of its files hold prompts: a README or LICENSE beside them is not read), a saved
`datasets` directory or a hub dataset id (`owner/name`). A relative path is resolved against the YAML file's
folder and must exist there. A row whose text field is missing, not text or empty fails with the file, line and
field named (and, when missing, the fields the row has).
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
# Named templates: a request put to the assistant as an HH dialogue turn (as the eval prompts are), or the opening
# of a text the model continues (as RealToxicityPrompts' prompts are).
TEMPLATES = {"dialogue": "\n\nHuman: {text}\n\nAssistant:", "continuation": "{text}"}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class PromptSetSpec(BaseModel):
    """One declared prompt set: where its texts are, which field holds them, and how many are used."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,39}$", description="Names its assets: `<name>_prompts` and each "
                      "policy's `<name>_toxicity_scores`")
    source: str = Field(description="A .jsonl/.jsonl.gz/.csv/.txt file, a folder of them, a saved dataset directory "
                        "or a hub dataset id")
    text_field: str = Field("prompt", min_length=1, description="Field holding the prompt text, dotted for nested "
                            "fields (prompt.text); ignored for .txt files")
    template: str = Field("continuation", description="How each text is put to the models: `dialogue` (an HH "
                          "turn the assistant answers), `continuation` (the text itself, continued as RTP's prompts "
                          "are), or a string in which {text} is replaced")
    files: str | None = Field(None, description="For a folder source: the glob naming its prompt files (`*.jsonl`, "
                              "`part-*.csv`); required there, so no README or LICENSE is read as prompts")
    hub_split: str = Field("train", description="Split to read from a hub or saved dataset")
    num_prompts: int | None = Field(None, ge=1, description="Sample this many distinct prompts with `seed`; None: "
                                    "all of them")
    seed: int = Field(0, description="Seed of the sample")
    description: str = Field("", description="What the set probes, shown on its assets")

    @field_validator("template")
    @classmethod
    def _has_text(cls, template: str) -> str:
        if template not in TEMPLATES and template.count("{text}") != 1:
            raise ValueError(f"must be {' or '.join(TEMPLATES)}, or contain {{text}} exactly once")
        return template

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, name: str) -> str:
        if name == RTP:
            raise ValueError(f"{name!r} is reserved (RealToxicityPrompts has its own assets)")
        return name

    def prompt(self, text: str) -> str:
        return TEMPLATES.get(self.template, self.template).replace("{text}", text)


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
    return tuple(spec.model_copy(update={"source": _resolved(spec.source, path, index)})
                 for index, spec in enumerate(declared.prompt_sets))


def _resolved(source: str, declaring: Path, index: int) -> str:
    """A local source as an absolute path, resolved against the declaring YAML file's folder; a hub id (`owner/name`
    with no file suffix, nothing of that name beside the YAML file) is kept.

    A relative path that does not exist is an error here, naming where it was looked for, rather than a hub
    connection error when the set is first read.
    """
    candidate = Path(source).expanduser()
    local = candidate if candidate.is_absolute() else declaring.parent / candidate
    if local.exists():
        return str(local.resolve())
    if HUB_ID.match(source) and not source.endswith(PROMPT_FILE_SUFFIXES) and not source.startswith("."):
        return source
    raise DataError(str(declaring), None, f"prompt_sets.{index}.source",
                    f"{source!r} does not exist (looked for {local.resolve()}); relative paths are from the YAML "
                    "file's folder, and a hub dataset id is owner/name")


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
        present = ", ".join(sorted(record.fields)) or "none"
        raise DataError(source, record.line, dotted, f"missing (the row's fields: {present}; set text_field)")
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
    elif path.is_dir() and not _is_saved_dataset(path):
        prompts = [prompt for file in _declared_files(spec, path) for prompt in _file_prompts(file, spec.text_field)]
    else:
        prompts = [PromptRecord(spec.source, record.line, _text(spec.source, record, spec.text_field))
                   for record in iter_source_records(spec.source, spec.hub_split)]
    if not prompts:
        raise DataError(spec.source, None, None, f"prompt set {spec.name!r} has no prompts")
    return prompts


def _is_saved_dataset(path: Path) -> bool:
    return any((path / marker).exists() for marker in ("dataset_info.json", "dataset_dict.json", "state.json"))


def _declared_files(spec: PromptSetSpec, folder: Path) -> list[Path]:
    """The folder's files matching the set's `files` glob, each of a readable type; no glob, no guess."""
    present = sorted(p.name for p in folder.iterdir() if p.is_file())
    if spec.files is None:
        raise DataError(spec.source, None, "files", f"a folder source needs a `files` glob (e.g. *.jsonl) naming its "
                        f"prompt files; the folder holds: {', '.join(present[:10]) or 'nothing'}")
    files = sorted(folder.glob(spec.files))
    unreadable = [p.name for p in files if not p.name.endswith(PROMPT_FILE_SUFFIXES)]
    if unreadable:
        raise DataError(spec.source, None, "files", f"{spec.files!r} matches {', '.join(unreadable[:5])}: not one of "
                        f"{', '.join(PROMPT_FILE_SUFFIXES)}")
    if not files:
        raise DataError(spec.source, None, "files", f"{spec.files!r} matches no file; the folder holds: "
                        f"{', '.join(present[:10]) or 'nothing'}")
    return files


def normalized(text: str) -> str:
    """The text with runs of whitespace collapsed, so trivially re-spaced duplicates count once."""
    return re.sub(r"\s+", " ", text).strip()
