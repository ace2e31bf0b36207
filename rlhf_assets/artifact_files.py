"""An artifact's files: hashing, the completeness marker, and checking a directory against its description.

What a step needs to describe its output where the bytes are, and to verify an input before reading it; the
stores that publish and fetch artifacts (local, S3) are `storage.py`. Kept apart so that a change to how artifacts
are uploaded re-versions no step: a step's code version covers only what it imports. Standard library and
pydantic only.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

COMPLETE_MARKER = "_COMPLETE"
CHUNK_BYTES = 1 << 20



class OutputDescription(BaseModel):
    """A step's account of its output directory, computed where the files are (in the job, not in Dagster)."""

    content_hash: str = Field(description="SHA-256 over the directory's relative names and file hashes.")
    sizes: dict[str, int] = Field(description="Every file's relative name and size in bytes.")
    hashes: dict[str, str] = Field(default_factory=dict, description="Every file's SHA-256, kept in the marker so "
                                   "a damaged artifact names the file on read.")

    @property
    def files(self) -> list[str]:
        return sorted(self.sizes)


def hash_file(path: Path) -> str:
    """SHA-256 of one file, streamed so multi-GB checkpoints do not need to fit in memory."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def regular_files(directory: Path) -> list[str]:
    """Every file under `directory` by relative name, refusing anything but directories and regular files.

    A symbolic link would publish (and hash) whatever it points at, a secret included, and a linked directory
    would be copied but never hashed; a FIFO blocks whoever opens it; sockets and devices are no data. None of
    them is followed or opened: the entry is named and the publish (or the check) stops.
    """
    names = []
    for parent, dirs, files in os.walk(directory):
        for entry in sorted((*dirs, *files)):
            path = Path(parent, entry)
            mode = os.lstat(path).st_mode
            if stat.S_ISREG(mode):
                names.append(path.relative_to(directory).as_posix())
            elif not stat.S_ISDIR(mode):
                raise UnpublishableEntryError(directory, path.relative_to(directory).as_posix(), _entry_kind(mode))
    return sorted(names)


def _entry_kind(mode: int) -> str:
    kinds = {stat.S_ISLNK: "symbolic link", stat.S_ISFIFO: "FIFO", stat.S_ISSOCK: "socket",
             stat.S_ISCHR: "character device", stat.S_ISBLK: "block device"}
    return next((name for test, name in kinds.items() if test(mode)), "special file")


def file_hashes(directory: Path, *, skip: str | None = None) -> dict[str, str]:
    """SHA-256 of every file under `directory` by relative name (`skip`: a top-level file left out)."""
    return {name: hash_file(directory / name) for name in regular_files(directory) if name != skip}


def read_marker(directory: Path) -> dict[str, Any]:
    """An artifact's `_COMPLETE` marker, opened only if it is a regular file (a FIFO there would block)."""
    path = directory / COMPLETE_MARKER
    if not stat.S_ISREG(os.lstat(path).st_mode):
        raise ArtifactIntegrityError(f"{path} is not a regular file")
    return json.loads(path.read_text())


def combined_hash(hashes: Mapping[str, str]) -> str:
    """The content hash of a directory from its files' hashes (names and bytes; not mtimes or order)."""
    digest = hashlib.sha256()
    for name in sorted(hashes):
        digest.update(name.encode("utf-8") + b"\0" + hashes[name].encode("ascii") + b"\n")
    return digest.hexdigest()


def hash_directory(directory: Path) -> tuple[str, list[str]]:
    """Content hash of a directory tree (relative names and bytes), independent of mtimes and order."""
    hashes = file_hashes(directory)
    return combined_hash(hashes), sorted(hashes)


def verify_directory(directory: Path, uri: str, expected_hash: str | None = None) -> None:
    """Check a published artifact's files against its `_COMPLETE` marker and its content-addressed name.

    An edited, added or removed file fails here, naming the file and both hashes, instead of quietly feeding
    every downstream asset while the lineage still shows the original hash. The content must match
    `expected_hash` when given (a downloaded copy checked against its recorded lineage), else the hash prefix
    in the artifact's name, so a rewritten marker cannot vouch for edited files. Published artifacts hold only
    regular files (publishing copies bytes), so a link, FIFO or device inside one is refused without opening it.
    """
    try:
        actual = file_hashes(directory, skip=COMPLETE_MARKER)
        marker = read_marker(directory)
    except UnpublishableEntryError as error:
        raise ArtifactIntegrityError(f"artifact {uri}: {error.name} is a {error.kind}, which no published artifact "
                                     "holds; re-materialize the asset that produced it to repair it") from None
    recorded: dict[str, str] = marker.get("hashes", {})
    repair = "; re-materialize the asset that produced it to repair it"
    for name in sorted(set(actual) | set(marker["files"])):
        if name not in actual:
            raise ArtifactIntegrityError(f"artifact {uri}: {name} is missing (it was published){repair}")
        if name not in marker["files"]:
            raise ArtifactIntegrityError(f"artifact {uri}: {name} was not part of the published artifact{repair}")
        if name in recorded and recorded[name] != actual[name]:
            raise ArtifactIntegrityError(f"artifact {uri}: {name} hashes to {actual[name]}, published as "
                                         f"{recorded[name]}{repair}")
    content = combined_hash(actual)
    named = content == expected_hash if expected_hash else content.startswith(uri.rstrip("/").rsplit("/", 1)[-1])
    if content != marker["content_hash"] or not named:
        raise ArtifactIntegrityError(f"artifact {uri}: content hashes to {content}, published as "
                                     f"{expected_hash or marker['content_hash']}{repair}")


def describe_directory(directory: Path) -> OutputDescription:
    """Content hash and file sizes of a finished output directory (what a step reports to the orchestrator)."""
    hashes = file_hashes(directory)
    return OutputDescription(content_hash=combined_hash(hashes), hashes=hashes,
                             sizes={name: (directory / name).stat().st_size for name in hashes})


def hash_json(value: Mapping[str, Any]) -> str:
    """Stable hash of a JSON-able mapping, used to key checkpoints by config and inputs."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode("utf-8")).hexdigest()




class UnpublishableEntryError(ValueError):
    """A step's output holds something other than regular files and directories (a link, FIFO, socket, device)."""

    def __init__(self, directory: Path, name: str, kind: str) -> None:
        super().__init__(f"{directory}: {name} is a {kind}, not a regular file; artifacts hold only regular files "
                         "and directories (write the bytes in its place)")
        self.name, self.kind = name, kind


class ArtifactIntegrityError(ValueError):
    """A stored artifact's files no longer match what was published (edited, added or removed)."""
