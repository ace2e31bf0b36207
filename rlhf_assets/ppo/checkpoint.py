"""Whole-state PPO checkpoints: weights, optimizer, scheduler, KL coefficient, reward statistics, RNG, step.

trlx's resume restored weights and optimizer only; the KL coefficient, running reward moments and step count
restarted from scratch. Ours restores all of it, so a killed run continues where it stopped and ends at the
same total step count. `accelerate`'s `save_state` writes the model, optimizer, scheduler and every process's
RNG states (and DeepSpeed's sharded optimizer, one shard per rank) into a staging directory; the main process
adds the trainer state and renames the directory when every rank has finished, so a half-written checkpoint is
never picked up.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

STATE_FILE = "trainer_state.json"
PREFIX = "step-"


def staging_dir(directory: Path, step: int) -> Path:
    """The temporary directory every rank writes step `step` into (the same name on all ranks)."""
    return directory / f".tmp-{PREFIX}{step:08d}"


def publish_checkpoint(directory: Path, staging: Path, step: int, state: dict[str, Any], keep: int = 2) -> Path:
    """Add the trainer state, rename `staging` to `step-N/` and prune older checkpoints beyond `keep`."""
    (staging / STATE_FILE).write_text(json.dumps({**state, "step": step}))
    final = directory / f"{PREFIX}{step:08d}"
    if final.exists():
        shutil.rmtree(final)
    os.rename(staging, final)
    for old in sorted(directory.glob(f"{PREFIX}*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(directory: Path) -> Path | None:
    """Newest complete checkpoint (staging directories are never picked)."""
    found = sorted(p for p in directory.glob(f"{PREFIX}*") if (p / STATE_FILE).exists()) if directory.is_dir() else []
    return found[-1] if found else None


def read_state(path: Path) -> dict[str, Any]:
    """The trainer state saved beside the tensors of checkpoint `path`."""
    return json.loads((path / STATE_FILE).read_text())
