"""Where preference data comes from: a local HH `.jsonl(.gz)` file, a local dataset directory, or the hub.

Users with internet name a hub dataset (`Dahoas/rm-static`, `Anthropic/hh-rlhf`); the offline preset and the
tests name a file. All three paths end in the same `RawRecord` stream, so mapping and validation are shared.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from rlhf_assets.data.hh import DataError, RawRecord, read_jsonl

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".json.gz")


def describe_source(source: str) -> str:
    """Say which loader a source string selects, so metadata records how the data was read."""
    path = Path(source)
    if source.endswith(JSONL_SUFFIXES):
        return "jsonl_file"
    if path.is_dir():
        return "dataset_directory"
    if path.is_absolute() or source.startswith((".", "~")):
        return "missing_local_path"
    return "hub_dataset"


def iter_source_records(source: str, split: str = "train") -> Iterator[RawRecord]:
    """Yield raw rows with line (or row) numbers from whichever kind of source the string names."""
    kind = describe_source(source)
    if kind == "jsonl_file":
        yield from read_jsonl(Path(source).expanduser())
    elif kind == "missing_local_path":
        raise DataError(source, None, None, "path does not exist")
    else:
        yield from _iter_hf_dataset(source, split, local=kind == "dataset_directory")


def _iter_hf_dataset(source: str, split: str, *, local: bool) -> Iterator[RawRecord]:
    import datasets

    saved_markers = ("dataset_info.json", "dataset_dict.json", "state.json")
    if local and any((Path(source) / marker).exists() for marker in saved_markers):
        loaded = datasets.load_from_disk(source)
        table = loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
    else:
        table = datasets.load_dataset(source, split=split)
    if len(table) == 0:
        raise DataError(source, None, None, f"split {split!r} has no rows")
    for row_no, row in enumerate(table, start=1):
        yield RawRecord(row_no, dict(row))
