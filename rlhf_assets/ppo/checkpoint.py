"""Whole-state PPO checkpoints: weights, optimizer, scheduler, KL coefficient, reward statistics, RNG, step.

trlx's resume restored weights and optimizer only; the KL coefficient, running reward moments and step count
restarted from scratch. Ours restores all of it, so a killed run continues where it stopped and ends at the
same total step count. Each checkpoint is written to a temporary directory and renamed when complete.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch

STATE_FILE = "trainer_state.json"
PREFIX = "step-"


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states: resuming must replay the same sampling."""
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def restore_rng(state: dict[str, Any]) -> None:
    """Put back the RNG states saved by `rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def save_checkpoint(directory: Path, step: int, tensors: dict[str, Any], state: dict[str, Any], keep: int = 2) -> Path:
    """Write `step-N/` atomically and prune older checkpoints beyond `keep`."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"{PREFIX}{step:08d}"
    staging = directory / f".tmp-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    for name, value in tensors.items():
        torch.save(value, staging / f"{name}.pt")
    torch.save(rng_state(), staging / "rng.pt")
    (staging / STATE_FILE).write_text(json.dumps({**state, "step": step}))
    if final.exists():
        shutil.rmtree(final)
    os.rename(staging, final)
    for old in sorted(directory.glob(f"{PREFIX}*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(directory: Path) -> Path | None:
    """Newest complete checkpoint (temporary directories are never picked)."""
    found = sorted(p for p in directory.glob(f"{PREFIX}*") if (p / STATE_FILE).exists()) if directory.is_dir() else []
    return found[-1] if found else None


def load_checkpoint(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(tensors by name, trainer state); RNG states are restored as a side effect."""
    tensors = {p.stem: torch.load(p, map_location="cpu", weights_only=False) for p in path.glob("*.pt")}
    restore_rng(tensors.pop("rng"))
    return tensors, json.loads((path / STATE_FILE).read_text())
