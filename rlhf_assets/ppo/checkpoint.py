"""Whole-state PPO checkpoints: weights, optimizer, scheduler, KL coefficient, reward statistics, RNG, step.

trlx's resume restored weights and optimizer only; the KL coefficient, running reward moments and step count
restarted from scratch. Ours restores all of it, so a killed run continues where it stopped and ends at the
same total step count. `accelerate`'s `save_state` writes the model, optimizer, scheduler and every process's
RNG states (and DeepSpeed's sharded optimizer, one shard per rank) into a staging directory of each host (outside
the directory SageMaker syncs); the main process adds the trainer state, and then each host's local main process
moves its host's files into `step-N/` and marks them (`rlhf_assets.checkpoint_integrity`). A checkpoint is
resumed from only when every host of the job has marked it and every marked file is whole, so neither a crash
mid-save nor a partial S3 restore after a spot interruption is ever picked up.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from rlhf_assets.checkpoint_integrity import current_host, incomplete_reason, write_marker

STATE_FILE = "trainer_state.json"
PREFIX = "step-"


def staging_dir(directory: Path, step: int, host: str | None = None) -> Path:
    """The temporary directory the ranks of one host write step `step` into (per host: hosts may share a disk).

    It lies beside `directory`, not in it: SageMaker uploads every file that appears in `/opt/ml/checkpoints`, so
    staging there would upload each ~90 GB checkpoint twice (once staged, once moved into `step-N/`). A sibling
    on the same disk keeps the move a rename; where the parent is not writable or another disk (a mount point),
    staging falls back to a hidden folder inside, which costs the second upload but never fails."""
    name = f"{PREFIX}{step:08d}-{host or current_host()}"
    sibling = staging_root(directory)
    try:
        sibling.mkdir(parents=True, exist_ok=True)
        directory.mkdir(parents=True, exist_ok=True)
        if sibling.stat().st_dev == directory.stat().st_dev:
            return sibling / name
    except OSError:
        pass
    return directory / f".tmp-{name}"


def staging_root(directory: Path) -> Path:
    """Where the hosts stage checkpoints of `directory` (a backend removes it with the checkpoints)."""
    return directory.parent / f"{directory.name}.staging"


def checkpoint_dir(directory: Path, step: int) -> Path:
    return directory / f"{PREFIX}{step:08d}"


def write_state(staging: Path, step: int, state: dict[str, Any]) -> None:
    """The trainer state beside the tensors (written by the main process into its host's staging)."""
    (staging / STATE_FILE).write_text(json.dumps({**state, "step": step}))


def commit_host_part(directory: Path, staging: Path, step: int, keep: int = 2, host: str | None = None) -> Path:
    """Move this host's staged files into `step-N/`, mark them, and prune this host's older checkpoints.

    Every host calls this (its local main process) once all of its ranks have saved; on hosts that share a disk
    the files of all hosts end up side by side, each set under its own marker.
    """
    final = checkpoint_dir(directory, step)
    files = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
    for name in files:
        (final / name).parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / name, final / name)
    write_marker(final, host, files)
    shutil.rmtree(staging, ignore_errors=True)
    # Checkpoints numbered after this step are leftovers of a run that resumed from an earlier one: never newest.
    steps = sorted(directory.glob(f"{PREFIX}*"))
    for old in [p for p in steps if p.name > final.name] + [p for p in steps if p.name <= final.name][:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(directory: Path, log: Any = None) -> Path | None:
    """Newest checkpoint that every host has marked and whose files are all whole (staging is never picked)."""
    found = sorted(directory.glob(f"{PREFIX}*"), reverse=True) if directory.is_dir() else []
    for candidate in found:
        reason = incomplete_reason(candidate)
        if reason is None:
            return candidate
        if log is not None:
            log(f"skipping checkpoint {candidate.name}: {reason}")
    return None


def read_state(path: Path) -> dict[str, Any]:
    """The trainer state saved beside the tensors of checkpoint `path`."""
    return json.loads((path / STATE_FILE).read_text())
