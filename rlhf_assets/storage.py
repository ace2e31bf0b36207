"""The artifact store: content-addressed directories of model and dataset files, local or on S3.

Every artifact lives at `<root>/<name>/<hash16>/` and is published whole or not at all: files are written under
a temporary name and renamed into place (locally), or uploaded before a `_COMPLETE` marker that readers
require (S3, where rename is not atomic). Manifests name an artifact by its location relative to the root
(`<name>/<hash16>`), so a copied or moved project reads its own files, and resolution refuses any name that
would leave the root. A crash therefore never leaves a half-written checkpoint that looks
valid, and two runs writing the same asset cannot overwrite each other's files. This module imports neither
dagster nor torch. Steps do not import it: what they need of an artifact's files is `artifact_files.py`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import re
import shutil
import stat
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, field_validator
from upath import UPath

from rlhf_assets.artifact_files import (
    CHUNK_BYTES,
    COMPLETE_MARKER,
    ArtifactIntegrityError,
    OutputDescription,
    combined_hash,
    describe_directory,
    hash_json,
    regular_files,
    verify_directory,
)

RESULTS_DIR = "_results"
MAX_RECORD_BYTES = 64 << 10  # a reuse record is a run id and an asset name
CACHE_DIR_ENV = "RLHF_CACHE_DIR"  # where S3 artifacts are downloaded (default: a private folder in the temp dir)
# Multipart uploads hold about part size × concurrency in memory (s3fs's defaults, 50 MiB × 10, took ~1 GB for a
# 1 GB file: bench/artifact_transfer.py); parts grow only where S3's 10,000-part limit needs it.
UPLOAD_PART, UPLOAD_CONCURRENCY, MAX_PARTS = 16 << 20, 4, 10_000


class Manifest(BaseModel):
    """An asset's value: where its files are, what they hash to, and what produced them."""

    asset: str = Field(description="Asset key this manifest belongs to.")
    uri: str = Field(description="Artifact directory relative to the artifact root (`<asset>/<hash16>`); empty for "
                     "pointer assets.")
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


def check_location(value: str, field: str) -> str:
    """`value` (a path or URI given as `field`), refused with the reason when it cannot be what was meant: a NUL
    byte (the OS would cut the path there), or a scheme followed by one slash (`s3:/bucket` would be read as a
    local folder named `s3:`)."""
    if "\0" in value:
        raise ArtifactLocationError(f"{field} {value!r} contains a NUL byte")
    scheme = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*):/(?!/)", value)
    if scheme and len(scheme.group(1)) > 1:  # `C:/...` is a Windows drive, not a scheme
        raise ArtifactLocationError(f"{field} {value!r} has one slash after '{scheme.group(1)}:'; a URI needs two "
                                    f"({scheme.group(1)}://bucket/prefix)")
    return value


def is_remote(uri: str) -> bool:
    """Whether a URI needs fsspec (s3:// and friends) rather than plain filesystem calls."""
    return "://" in uri and not uri.startswith("file://")


def _checked_parts(name: str, shown: str | None = None) -> list[str]:
    """The `/`-separated parts of a relative artifact name, refusing empty, `.`, `..` and backslashed parts."""
    parts = name.strip("/").split("/")
    if any(part in ("", ".", "..") or "\\" in part for part in parts):
        raise ArtifactLocationError(f"artifact name {shown or name!r} has an empty, '.', '..' or backslashed part: "
                                    "artifact names stay inside the artifact root")
    return parts


STAGING_PREFIX, STALE_PREFIX, LOCK_SUFFIX = ".tmp-", ".stale-", ".lock"


def _copy_described(source: Path, target: Path, description: OutputDescription) -> None:
    """Copy the regular files of `source` to a new owner-only `target`, hashing each as it is copied: what is
    published is byte for byte what the step described (a file changed, added or removed since is refused)."""
    names = regular_files(source)
    if names != description.files:
        changed = sorted(set(names) ^ set(description.files))
        raise ArtifactStoreError(f"{source}: its files changed after the step described them ({', '.join(changed)})")
    target.mkdir(mode=0o700)
    copied: dict[str, str] = {}
    for name in names:
        destination = target / name
        destination.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        digest, size = hashlib.sha256(), 0
        descriptor = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with (source / name).open("rb") as reader, os.fdopen(descriptor, "wb") as writer:
            while chunk := reader.read(CHUNK_BYTES):
                digest.update(chunk)
                size += len(chunk)
                writer.write(chunk)
        expected = description.hashes.get(name)
        if size != description.sizes[name] or (expected is not None and digest.hexdigest() != expected):
            raise ArtifactStoreError(f"{source / name}: changed after the step described it "
                                     f"({size} bytes, {digest.hexdigest()}; described {description.sizes[name]} "
                                     f"bytes, {expected})")
        copied[name] = digest.hexdigest()
    if combined_hash(copied) != description.content_hash:  # the hash the artifact is named by
        raise ArtifactStoreError(f"{source}: its files hash to {combined_hash(copied)}, the step described "
                                 f"{description.content_hash}")


def _remove_entry(path: Path) -> None:
    """Remove a directory tree or any other entry (a FIFO or link left at an artifact's place included)."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.unlink(path)


@contextlib.contextmanager
def _held_lock(path: Path) -> Iterator[None]:
    """Create and hold `path`'s exclusive lock. A cleaner may lock and delete a lock file between its creation
    and our `flock`; the lock then guards nothing, so it is taken again until the file on disk is the one held."""
    while True:
        handle = open(path, "a")  # noqa: SIM115 - held for the duration of the publish
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            on_disk = os.stat(path)
        except FileNotFoundError:
            handle.close()
            continue
        if on_disk.st_ino == os.fstat(handle.fileno()).st_ino:
            break
        handle.close()
    with handle:
        yield


def _remove_abandoned_staging(folder: Path) -> None:
    """Delete staging directories whose publisher is gone (its lock is free): a publish killed mid-copy leaves
    up to a whole checkpoint behind (and one killed mid-replace, the `.stale-` copy it set aside), which nothing
    else would ever remove."""
    for lock_path in folder.glob(f"{STAGING_PREFIX}*{LOCK_SUFFIX}"):
        try:
            handle = open(lock_path)  # noqa: SIM115 - held across the removal below
        except FileNotFoundError:
            continue
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its publisher is still copying
            staging = Path(str(lock_path)[: -len(LOCK_SUFFIX)])
            _remove_entry(staging)
            _remove_entry(staging.with_name(STALE_PREFIX + staging.name[len(STAGING_PREFIX):]))
            lock_path.unlink(missing_ok=True)


class ArtifactStoreError(OSError):
    """The artifact root cannot take a new artifact (unwritable, full, not a directory); nothing was replaced."""


class ArtifactLocationError(ValueError):
    """A manifest names a location outside the artifact root (`..`, a link out, another root's absolute URI)."""


class ArtifactStore:
    """Publishes and resolves artifact directories under one root (a local path or an s3:// prefix)."""

    def __init__(self, root: str) -> None:
        check_location(root, "artifact root")
        self.remote = is_remote(root)
        self.root = UPath(root if self.remote else os.path.abspath(root))

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
        relative = f"{'/'.join(_checked_parts(name))}/{description.content_hash[:16]}"
        self.resolve(name)  # the asset's folder must itself lie inside the root
        final = self.root / relative
        marker = {"content_hash": description.content_hash, "files": description.files, "hashes": description.hashes}
        try:
            if self.problem(relative, description) is None:
                return relative, description.content_hash, description.files
            if self.remote:
                if self.is_complete(relative):  # damaged: not an artifact until this publish completes it
                    self.root.fs.rm(f"{final}/{COMPLETE_MARKER}")
                self._clear_incomplete_remote(str(final), description)
                etags = self._transfer_to_remote(source, str(final), description)
                (final / COMPLETE_MARKER).write_text(json.dumps({**marker, "etags": etags}))
            elif is_remote(source):
                raise ArtifactStoreError(f"cannot adopt remote output {source} into the local root {self.root}: "
                                         "root the artifact store on S3 (RLHF_ARTIFACT_ROOT=s3://bucket/prefix)")
            else:
                self._publish_local(Path(source), Path(str(final)), json.dumps(marker), description)
        except ArtifactStoreError:
            raise
        except OSError as error:
            raise ArtifactStoreError(
                f"could not publish {name!r} to artifact root {self.root}: {error.strerror or error} "
                f"({type(error).__name__}); earlier artifacts are untouched") from error
        return relative, description.content_hash, description.files

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

    def _transfer_to_remote(self, source: str, final: str, description: OutputDescription) -> dict[str, str]:
        """Copy every described file to `final`: streamed multipart uploads from disk, or S3 server-side copies.

        Returns each object's ETag as stored, for the marker: S3 gives a new ETag to any rewrite of an object, so
        later reuse checks catch an edit from a listing alone, without downloading the bytes.
        """
        fs = self.root.fs
        etags = {}
        for rel in description.files:
            target = f"{final}/{rel}"
            if is_remote(source):
                fs.copy(f"{source.rstrip('/')}/{rel}", target)
            else:
                size = description.sizes[rel]
                fs.put_file(str(Path(source) / rel), target, chunksize=max(UPLOAD_PART, -(-size // MAX_PARTS)),
                            max_concurrency=UPLOAD_CONCURRENCY)
            info = fs.info(target)
            if info["size"] != description.sizes[rel]:
                raise ArtifactStoreError(f"{target}: {info['size']} bytes arrived, the step described "
                                         f"{description.sizes[rel]}; the artifact was not marked complete")
            etags[rel] = info["ETag"]
        return etags

    @staticmethod
    def _publish_local(local_dir: Path, final: Path, marker: str, description: OutputDescription) -> None:
        """Copy the output into place under a temporary name, then rename it in; owner-only throughout.

        Each staging directory is paired with a lock file its publisher holds (`flock`, released by the kernel
        when the process dies, SIGKILL included), so the next publish of the asset removes what a killed one
        left, and never the directory of one still copying.
        """
        final.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _remove_abandoned_staging(final.parent)
        token = uuid.uuid4().hex[:8]
        staging = final.parent / f"{STAGING_PREFIX}{final.name}-{token}"
        stale = final.parent / f"{STALE_PREFIX}{final.name}-{token}"
        with _held_lock(Path(f"{staging}{LOCK_SUFFIX}")):
            try:
                _copy_described(local_dir, staging, description)
                (staging / COMPLETE_MARKER).write_text(marker)
                os.chmod(staging / COMPLETE_MARKER, 0o600)
                if os.path.lexists(final):  # interrupted, damaged or not a directory (publish_output checked)
                    os.rename(final, stale)
                try:
                    os.rename(staging, final)
                except OSError:
                    if not (final / COMPLETE_MARKER).exists():
                        raise
            finally:
                _remove_entry(staging)
                _remove_entry(stale)
                Path(f"{staging}{LOCK_SUFFIX}").unlink(missing_ok=True)  # a cleaner may have taken it first

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
        """The record kept under `key`, if any; undecodable bytes come back replaced, for the reader to refuse.
        Locally only a regular file is read (a FIFO or link there is no record), and at most `MAX_RECORD_BYTES`."""
        path = self.root / RESULTS_DIR / f"{key}.json"
        if self.remote:
            return path.read_bytes()[:MAX_RECORD_BYTES].decode("utf-8", errors="replace") if path.exists() else None
        try:
            descriptor = os.open(str(path), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:  # absent, a link, or unreadable: no record
            return None
        with os.fdopen(descriptor, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                return None
            return handle.read(MAX_RECORD_BYTES).decode("utf-8", errors="replace")

    def record_name(self, key: str) -> str:
        """Where the record kept under `key` lives, for messages."""
        return str(self.root / RESULTS_DIR / f"{key}.json")

    def resolve(self, uri: str) -> str:
        """The location of the artifact a manifest names, refusing any name that leaves this root.

        Manifests name artifacts relative to the root. An absolute path or URI is accepted only when it lies
        inside this root (manifests written before names were relative); one from another root, a `..`
        component or (locally) a link that resolves outside the root is an `ArtifactLocationError`, because
        reading it would feed a step files nobody published here.
        """
        relative = self._relative(uri)
        location = self.root / relative
        if not self.remote:
            root = os.path.realpath(str(self.root))
            real = os.path.realpath(str(location))
            if os.path.commonpath([root, real]) != root:
                raise ArtifactLocationError(f"artifact {uri!r} resolves to {real}, outside the artifact root {root} "
                                            "(a link out of the root); re-materialize the asset to publish it here")
        return str(location)

    def _relative(self, uri: str) -> str:
        """`uri` as a checked name relative to the root."""
        if not uri:
            raise ArtifactLocationError("a manifest with an empty artifact name has no files to read")
        text = uri[len("file://"):] if uri.startswith("file://") else uri
        if is_remote(text) or os.path.isabs(text):
            root = str(self.root).rstrip("/") + "/"
            if not text.startswith(root):
                raise ArtifactLocationError(
                    f"artifact {uri!r} is outside this artifact root {self.root}: manifests name artifacts "
                    "relative to their root (a copy of another project's manifest, or a forged one); "
                    "re-materialize the asset to publish it here")
            text = text[len(root):]
        return "/".join(_checked_parts(text, uri))

    def is_complete(self, uri: str) -> bool:
        """Whether an artifact directory was fully published (its marker exists)."""
        return (UPath(self.resolve(uri)) / COMPLETE_MARKER).exists()

    def problem(self, uri: str, description: OutputDescription | None = None,
                expected_hash: str | None = None) -> str | None:
        """Why a stored artifact cannot be used as it is (None when it can): checked before a stored result is
        reused and before an identical publish is skipped. `expected_hash` is the full content hash the lineage
        records, where there is one; else the artifact must match the hash prefix of its own name.

        Locally every file is re-hashed. On S3 a full check would mean a download, so one listing is compared
        with the marker instead: the same files, each with the ETag it had when published (any rewrite of an
        object changes it) and the size the publishing step described; downloads are re-hashed on read by
        `local_path`.
        """
        try:
            location = self.resolve(uri)
        except ArtifactLocationError as error:
            return str(error)
        if not self.is_complete(uri):
            return f"artifact {uri} is missing or incomplete (no {COMPLETE_MARKER} marker)"
        try:
            if not self.remote:
                verify_directory(Path(location), uri, expected_hash)
                return None
            return self._remote_problem(location, uri, description, expected_hash)
        except ArtifactIntegrityError as error:
            return str(error)
        except (ValueError, KeyError, TypeError) as error:  # a marker that is not the JSON publishing wrote
            return f"artifact {uri}: its {COMPLETE_MARKER} marker is unreadable ({type(error).__name__}: {error})"

    def _remote_problem(self, location: str, uri: str, description: OutputDescription | None,
                        expected_hash: str | None) -> str | None:
        """The S3 half of `problem`: one LIST and one small GET (the marker), no download of the files."""
        marker = json.loads((UPath(location) / COMPLETE_MARKER).read_text())
        if expected_hash is not None and marker["content_hash"] != expected_hash:
            return f"artifact {uri}: published as {marker['content_hash']}, its lineage records {expected_hash}"
        prefix = location.split("://", 1)[-1].rstrip("/") + "/"
        listing = self.root.fs.find(location.rstrip("/") + "/", detail=True)
        stored = {path.split("://", 1)[-1][len(prefix):]: info for path, info in listing.items()}
        stored.pop(COMPLETE_MARKER, None)
        etags: dict[str, str] = marker.get("etags", {})
        for name in sorted(set(stored) | set(marker["files"])):
            if name not in stored:
                return f"artifact {uri}: {name} is missing (it was published)"
            if name not in marker["files"]:
                return f"artifact {uri}: {name} was not part of the published artifact"
            if name in etags and stored[name].get("ETag") != etags[name]:
                return (f"artifact {uri}: {name} was rewritten after publishing (ETag {stored[name].get('ETag')}, "
                        f"published as {etags[name]})")
            if description is not None and stored[name]["size"] != description.sizes.get(name):
                return (f"artifact {uri}: {name} holds {stored[name]['size']} bytes, published with "
                        f"{description.sizes.get(name)}")
        return None

    def staging_source(self, manifest: Manifest) -> Path:
        """Where to stage a step's input from: a local artifact as it is (complete, inside the root), because the
        step re-hashes its own copy against `manifest.content_hash` before reading it (hashing here as well
        would read every byte twice); an S3 artifact downloaded and verified (`verified_path`)."""
        if self.remote:
            return self.verified_path(manifest)
        if not self.is_complete(manifest.uri):
            raise FileNotFoundError(f"artifact {manifest.uri} is missing or incomplete (no {COMPLETE_MARKER} marker)")
        return Path(self.resolve(manifest.uri))

    def verified_path(self, manifest: Manifest, cache_dir: Path | None = None) -> Path:
        """`local_path` of the artifact a manifest names, checked against the manifest's full content hash."""
        return self.local_path(manifest.uri, cache_dir, manifest.content_hash)

    def local_path(self, uri: str, cache_dir: Path | None = None, expected_hash: str | None = None) -> Path:
        """A local directory holding the artifact: the path itself, or a download of an S3 artifact, verified
        against `expected_hash` (the lineage's full content hash) where the caller has one.

        Downloads go to a cache only this user can read (`private_directory`): a shared, predictable `/tmp` path
        could be prepared by someone else, and a world-readable copy would undo the blinding of eval files.
        """
        location = self.resolve(uri)
        if not self.is_complete(uri):
            raise FileNotFoundError(f"artifact {uri} is missing or incomplete (no {COMPLETE_MARKER} marker)")
        if not self.remote:
            verify_directory(Path(location), uri, expected_hash)
            return Path(location)
        default = Path(os.environ.get(CACHE_DIR_ENV)
                       or Path(tempfile.gettempdir()) / f"rlhf-assets-cache-{os.getuid()}")
        cache = private_directory(cache_dir or default)
        target = cache / hash_json({"uri": location})[:16]
        if (target / COMPLETE_MARKER).exists():
            try:
                verify_directory(target, uri, expected_hash)
                return target
            except ArtifactIntegrityError:
                shutil.rmtree(target)  # a damaged cached copy: fetch the artifact again
        staging = Path(tempfile.mkdtemp(prefix=".download-", dir=cache))
        try:
            self.root.fs.get(location + "/", str(staging) + "/", recursive=True)
            verify_directory(staging, uri, expected_hash)  # only verified downloads enter the cache
            shutil.rmtree(target, ignore_errors=True)
            os.rename(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target


class UnsafeDirectoryError(OSError):
    """A directory this process would keep private files in is not private (another owner, a link, open modes)."""


def private_directory(path: Path) -> Path:
    """`path` as a directory only this user can use: created 0700, or refused when it exists as something
    else (a link, another user's, readable or writable by others), never silently reused."""
    path = path.expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    info = os.lstat(path)
    problem = ("is not a directory (a link or a file)" if not stat.S_ISDIR(info.st_mode)
               else f"belongs to uid {info.st_uid}, not {os.getuid()}" if info.st_uid != os.getuid()
               else f"has mode {stat.S_IMODE(info.st_mode):04o}; others may read or write it"
               if stat.S_IMODE(info.st_mode) & 0o077 else None)
    if problem is not None:
        raise UnsafeDirectoryError(f"{path} {problem}: it is not reused for private files; remove it, or point "
                                   "RLHF_CACHE_DIR at a directory of your own")
    return path
