"""When a checkpoint counts: every host's marker is present and every file it lists is there, whole.

SageMaker syncs `/opt/ml/checkpoints` to S3 continuously and file by file, in no particular order, and restores
the whole prefix on every host after a spot interruption. Writing some file "last" (the Trainer's
`trainer_state.json`, a rename) therefore orders nothing on S3: a restored checkpoint may lack a shard or hold a
half-uploaded one. So each host, once its ranks have finished writing a checkpoint, writes a marker
`_COMPLETE.<host>.json` listing the files it wrote with their sizes (and SHA-256 for files under 1 MiB: configs,
states, RNG files); a checkpoint is used only when the marker of every host of the job is present and every
listed file matches. Standard library only: the PPO loop and the step programs both use it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from rlhf_assets.contract import CURRENT_HOST_ENV, HOSTS_ENV

MARKER_PREFIX = "_COMPLETE."
HASHED_BELOW = 1 << 20


def current_host() -> str:
    """This machine's name in the job (`SM_CURRENT_HOST`; `algo-1` outside SageMaker)."""
    return os.environ.get(CURRENT_HOST_ENV, "algo-1")


def job_hosts() -> list[str]:
    """Every machine of the job (`SM_HOSTS`), each of which marks the checkpoint files it wrote."""
    return json.loads(os.environ.get(HOSTS_ENV, '["algo-1"]'))


def marker_path(directory: Path, host: str) -> Path:
    return directory / f"{MARKER_PREFIX}{host}.json"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_marker(directory: Path, host: str | None = None, files: list[str] | None = None) -> Path:
    """Mark `files` (default: every file in `directory` but markers) as this host's complete part."""
    names = files if files is not None else sorted(
        p.relative_to(directory).as_posix() for p in directory.rglob("*")
        if p.is_file() and not p.name.startswith(MARKER_PREFIX) and not p.name.startswith(".marker-"))
    entries: dict[str, dict[str, Any]] = {}
    for name in names:
        size = (directory / name).stat().st_size
        entries[name] = {"size": size, **({"sha256": _sha256(directory / name)} if size < HASHED_BELOW else {})}
    final = marker_path(directory, host or current_host())
    staging = directory / f".marker-{final.name}"
    staging.write_text(json.dumps({"files": entries}, sort_keys=True))
    os.replace(staging, final)
    return final


def incomplete_reason(directory: Path, hosts: list[str] | None = None) -> str | None:
    """Why `directory` is not a complete checkpoint of a job on `hosts` (default: this job's), or None."""
    for host in hosts or job_hosts():
        marker = marker_path(directory, host)
        if not marker.is_file():
            return f"no completeness marker from {host}"
        try:
            entries = json.loads(marker.read_text())["files"]
            sizes = {name: int(entry["size"]) for name, entry in entries.items()}
        except (ValueError, KeyError, TypeError, AttributeError):
            return f"{marker.name} is unreadable"
        for name, entry in entries.items():
            path = directory / name
            if not path.is_file():
                return f"{name} (listed by {host}) is missing"
            if path.stat().st_size != sizes[name]:
                return f"{name} has {path.stat().st_size} bytes, {host} wrote {entry['size']}"
            if "sha256" in entry and _sha256(path) != entry["sha256"]:
                return f"{name} differs from what {host} wrote"
    return None
