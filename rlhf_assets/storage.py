"""The artifact store: content-addressed directories of model and dataset files, local or on S3.

Every artifact lives at `<root>/<name>/<hash16>/` and is published whole or not at all: files are written under
a temporary name and renamed into place (locally), or uploaded before a `_COMPLETE` marker that readers
require (S3, where rename is not atomic). A crash therefore never leaves a half-written checkpoint that looks
valid, and two runs writing the same asset cannot overwrite each other's files. This module imports neither
dagster nor torch: step programs use it too.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, field_validator
from upath import UPath

RESULTS_DIR = "_results"
COMPLETE_MARKER = "_COMPLETE"
_CHUNK = 1 << 20
# Multipart uploads hold about part size × concurrency in memory (s3fs's defaults, 50 MiB × 10, took ~1 GB for a
# 1 GB file: bench/artifact_transfer.py); parts grow only where S3's 10,000-part limit needs it.
UPLOAD_PART, UPLOAD_CONCURRENCY, MAX_PARTS = 16 << 20, 4, 10_000


class OutputDescription(BaseModel):
    """A step's account of its output directory, computed where the files are (in the job, not in Dagster)."""

    content_hash: str = Field(description="SHA-256 over the directory's relative names and file hashes.")
    sizes: dict[str, int] = Field(description="Every file's relative name and size in bytes.")
    hashes: dict[str, str] = Field(default_factory=dict, description="Every file's SHA-256, kept in the marker so "
                                   "a damaged artifact names the file on read.")

    @property
    def files(self) -> list[str]:
        return sorted(self.sizes)


class Manifest(BaseModel):
    """An asset's value: where its files are, what they hash to, and what produced them."""

    asset: str = Field(description="Asset key this manifest belongs to.")
    uri: str = Field(description="Artifact directory (local path or s3:// URI); empty for pointer assets.")
    content_hash: str = Field(description="SHA-256 over the artifact's files; the asset's data version.")
    preset: str
    config: dict[str, Any] = Field(default_factory=dict, description="The resolved config that ran.")
    counts: dict[str, int] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    files: list[str] = Field(default_factory=list)

    @field_validator("metrics")
    @classmethod
    def _finite(cls, metrics: dict[str, float]) -> dict[str, float]:
        """NaN/Inf would be written as JSON null and break the next asset far from the cause: refuse it here."""
        bad = {name: value for name, value in metrics.items() if not math.isfinite(value)}
        if bad:
            raise ValueError("metrics must be finite numbers: " + ", ".join(f"{k}={v}" for k, v in bad.items()))
        return metrics


def hash_file(path: Path) -> str:
    """SHA-256 of one file, streamed so multi-GB checkpoints do not need to fit in memory."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_hashes(directory: Path, *, skip: str | None = None) -> dict[str, str]:
    """SHA-256 of every file under `directory` by relative name (`skip`: a top-level file left out)."""
    names = sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())
    return {name: hash_file(directory / name) for name in names if name != skip}


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


def verify_directory(directory: Path, uri: str) -> None:
    """Check a published artifact's files against its `_COMPLETE` marker and its content-addressed name.

    An edited, added or removed file fails here, naming the file and both hashes, instead of quietly feeding
    every downstream asset while the lineage still shows the original hash.
    """
    marker = json.loads((directory / COMPLETE_MARKER).read_text())
    actual = file_hashes(directory, skip=COMPLETE_MARKER)
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
    if content != marker["content_hash"] or not content.startswith(uri.rstrip("/").rsplit("/", 1)[-1]):
        raise ArtifactIntegrityError(f"artifact {uri}: content hashes to {content}, published as "
                                     f"{marker['content_hash']}{repair}")


def describe_directory(directory: Path) -> OutputDescription:
    """Content hash and file sizes of a finished output directory (what a step reports to the orchestrator)."""
    hashes = file_hashes(directory)
    return OutputDescription(content_hash=combined_hash(hashes), hashes=hashes,
                             sizes={name: (directory / name).stat().st_size for name in hashes})


def hash_json(value: Mapping[str, Any]) -> str:
    """Stable hash of a JSON-able mapping, used to key checkpoints by config and inputs."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def is_remote(uri: str) -> bool:
    """Whether a URI needs fsspec (s3:// and friends) rather than plain filesystem calls."""
    return "://" in uri and not uri.startswith("file://")


class ArtifactStoreError(OSError):
    """The artifact root cannot take a new artifact (unwritable, full, not a directory); nothing was replaced."""


class ArtifactIntegrityError(ValueError):
    """A stored artifact's files no longer match what was published (edited, added or removed)."""


class ArtifactStore:
    """Publishes and resolves artifact directories under one root (a local path or an s3:// prefix)."""

    def __init__(self, root: str) -> None:
        self.root = UPath(root)
        self.remote = is_remote(root)

    def publish_directory(self, local_dir: Path, name: str) -> tuple[str, str, list[str]]:
        """Publish a finished local directory as artifact `name`; returns (uri, content_hash, files).

        Publishing identical content twice is a no-op that returns the same URI, which is what makes an
        unchanged re-materialization report the same data version.
        """
        if not local_dir.is_dir():
            raise FileNotFoundError(f"artifact directory {local_dir} does not exist")
        return self.publish_output(str(local_dir), name, describe_directory(local_dir))

    def publish_output(self, source: str, name: str, description: OutputDescription) -> tuple[str, str, list[str]]:
        """Publish a step's output (a local directory or an S3 prefix) as described by the step that wrote it.

        The bytes never pass through this process whole: a local directory is copied file by file (or streamed
        to S3 in multipart chunks), an S3 prefix is copied server-side (s3fs uses a
        multipart UploadPartCopy above 150 MiB, as objects over 5 GB require). Sizes are
        checked against the description before the `_COMPLETE` marker makes the artifact visible.
        """
        if not description.sizes:
            raise ValueError(f"artifact directory {source} is empty: nothing to publish for {name!r}")
        final = self.root / name / description.content_hash[:16]
        marker = json.dumps({"content_hash": description.content_hash, "files": description.files,
                             "hashes": description.hashes})
        try:
            if self.is_complete(str(final)) and self.problem(str(final), description) is None:
                return str(final), description.content_hash, description.files
            if self.remote:
                if self.is_complete(str(final)):  # damaged: not an artifact until this publish completes it
                    self.root.fs.rm(f"{final}/{COMPLETE_MARKER}")
                self._clear_incomplete_remote(str(final), description)
                self._transfer_to_remote(source, str(final), description)
                (final / COMPLETE_MARKER).write_text(marker)
            elif is_remote(source):
                raise ArtifactStoreError(f"cannot adopt remote output {source} into the local root {self.root}: "
                                         "root the artifact store on S3 (RLHF_ARTIFACT_ROOT=s3://bucket/prefix)")
            else:
                self._publish_local(Path(source), Path(str(final)), marker)
        except ArtifactStoreError:
            raise
        except OSError as error:
            raise ArtifactStoreError(
                f"could not publish {name!r} to artifact root {self.root}: {error.strerror or error} "
                f"({type(error).__name__}); earlier artifacts are untouched") from error
        return str(final), description.content_hash, description.files

    def _clear_incomplete_remote(self, final: str, description: OutputDescription) -> None:
        """Delete what an interrupted publish left under `final` that this one will not overwrite.

        Without a `_COMPLETE` marker nothing there is an artifact; files this publish writes are overwritten
        anyway, and stray ones (a different file list) must not end up inside the completed artifact.
        """
        fs = self.root.fs
        prefix = final.rstrip("/") + "/"
        try:
            present = fs.find(prefix)
        except FileNotFoundError:
            return
        keep = {f"{prefix}{rel}".split("://", 1)[-1] for rel in description.files}
        stray = [path for path in present if path.split("://", 1)[-1] not in keep]
        if stray:
            fs.rm(stray)

    def _transfer_to_remote(self, source: str, final: str, description: OutputDescription) -> None:
        """Copy every described file to `final`: streamed multipart uploads from disk, or S3 server-side copies."""
        fs = self.root.fs
        for rel in description.files:
            target = f"{final}/{rel}"
            if is_remote(source):
                fs.copy(f"{source.rstrip('/')}/{rel}", target)
            else:
                size = description.sizes[rel]
                fs.put_file(str(Path(source) / rel), target, chunksize=max(UPLOAD_PART, -(-size // MAX_PARTS)),
                            max_concurrency=UPLOAD_CONCURRENCY)
            size = fs.info(target)["size"]
            if size != description.sizes[rel]:
                raise ArtifactStoreError(f"{target}: {size} bytes arrived, the step described "
                                         f"{description.sizes[rel]}; the artifact was not marked complete")

    @staticmethod
    def _publish_local(local_dir: Path, final: Path, marker: str) -> None:
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
        stale = final.parent / f".stale-{final.name}-{uuid.uuid4().hex[:8]}"
        try:
            shutil.copytree(local_dir, staging)
            (staging / COMPLETE_MARKER).write_text(marker)
            if final.exists():  # interrupted (no marker) or damaged (publish_output checked): set aside
                os.rename(final, stale)
            try:
                os.rename(staging, final)
            except OSError:
                if not (final / COMPLETE_MARKER).exists():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            shutil.rmtree(stale, ignore_errors=True)

    def remember(self, key: str, record: str) -> None:
        """Keep `record` (a serialized step result) under `key` so identical work can be skipped later."""
        path = self.root / RESULTS_DIR / f"{key}.json"
        if self.remote:
            path.write_text(record)  # an S3 PUT is atomic
            return
        local = Path(str(path))
        local.parent.mkdir(parents=True, exist_ok=True)
        staging = local.with_name(f".{local.name}.{uuid.uuid4().hex[:8]}.tmp")
        staging.write_text(record)
        os.replace(staging, local)  # a crash or a full disk never leaves a half-written record behind

    def recall(self, key: str) -> str | None:
        """The record kept under `key`, if any."""
        path = self.root / RESULTS_DIR / f"{key}.json"
        return path.read_text() if path.exists() else None

    def is_complete(self, uri: str) -> bool:
        """Whether an artifact directory was fully published (its marker exists)."""
        return (UPath(uri) / COMPLETE_MARKER).exists()

    def problem(self, uri: str, description: OutputDescription | None = None) -> str | None:
        """Why a stored artifact cannot be used as it is (None when it can): checked before a stored result is
        reused and before an identical publish is skipped.

        Locally every file is re-hashed. On S3 a full check would mean a download, so the cheap one is made
        (each file's size against the publishing step's description, when given); downloads are re-hashed on
        read by `local_path`.
        """
        if not self.is_complete(uri):
            return f"artifact {uri} is missing or incomplete (no {COMPLETE_MARKER} marker)"
        if not is_remote(uri):
            try:
                verify_directory(Path(str(UPath(uri))), uri)
            except ArtifactIntegrityError as error:
                return str(error)
            return None
        if description is not None:
            fs = self.root.fs
            for rel, size in description.sizes.items():
                try:
                    stored = fs.info(f"{uri.rstrip('/')}/{rel}")["size"]
                except FileNotFoundError:
                    return f"artifact {uri}: {rel} is missing"
                if stored != size:
                    return f"artifact {uri}: {rel} holds {stored} bytes, published with {size}"
        return None

    def local_path(self, uri: str, cache_dir: Path | None = None) -> Path:
        """A local directory holding the artifact: the path itself, or a download of an S3 artifact."""
        if not self.is_complete(uri):
            raise FileNotFoundError(f"artifact {uri} is missing or incomplete (no {COMPLETE_MARKER} marker)")
        if not is_remote(uri):
            verify_directory(Path(str(UPath(uri))), uri)
            return Path(str(UPath(uri)))
        cache = cache_dir or Path(tempfile.gettempdir()) / "rlhf-assets-cache"
        target = cache / hash_json({"uri": uri})[:16]
        if not (target / COMPLETE_MARKER).exists():
            cache.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".download-", dir=cache))
            try:
                UPath(uri).fs.get(uri.rstrip("/") + "/", str(staging) + "/", recursive=True)
                shutil.rmtree(target, ignore_errors=True)
                os.rename(staging, target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        verify_directory(target, uri)
        return target
