"""Policy snapshots at a few points of training, for the reward over-optimisation curve (Gao et al. 2023).

A policy pushed against a learned reward model first improves by any measure, then keeps raising the proxy's
score while getting worse by an independent one: the optimum is somewhere along the run, at some KL from SFT.
Seeing it needs the policy as it was at a few points, not just its end. A snapshot is the trainable parameters
only (the unfrozen top layers, or the LoRA adapters), so at 6B parameters it is a fraction of the model; it is
applied to the SFT weights to rebuild the policy. Snapshots are written beside the training checkpoints (which
survive a restart) and copied into the policy artifact at the end, listed in `snapshots/index.json`.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

SNAPSHOTS_DIR = "snapshots"
INDEX_FILE = "index.json"


def snapshot_steps(total_steps: int, points: int) -> list[int]:
    """`points` optimizer steps evenly spaced inside the run (the final policy is the artifact itself)."""
    if points <= 0:
        return []
    return sorted({round(total_steps * i / (points + 1)) for i in range(1, points + 1)} - {0, total_steps})


def read_index(directory: Path) -> list[dict[str, Any]]:
    """The snapshots recorded in `directory` (a policy artifact's `snapshots/`), by step; none when absent."""
    index = directory / INDEX_FILE
    return json.loads(index.read_text())["snapshots"] if index.is_file() else []


def save_snapshot(directory: Path, step: int, model: torch.nn.Module, lora: dict[str, float] | None,
                  measures: dict[str, float]) -> None:
    """Write the trainable parameters of `model` at `step` and add it to the index (atomically, so a killed run
    leaves the previous index); `measures` (e.g. the rollout KL) are recorded beside it."""
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {name: p.detach().to("cpu").contiguous() for name, p in model.named_parameters() if p.requires_grad}
    if not tensors:
        raise ValueError("the model has no trainable parameters to snapshot")
    file = f"step-{step:08d}.safetensors"
    save_file(tensors, str(directory / file))
    entries = [e for e in read_index(directory) if e["step"] != step]
    entries.append({"step": step, "file": file, "lora": lora, **measures})
    staged = directory / f".{INDEX_FILE}.tmp"
    staged.write_text(json.dumps({"snapshots": sorted(entries, key=lambda e: e["step"])}, indent=2))
    os.replace(staged, directory / INDEX_FILE)


def copy_snapshots(source: Path, target: Path) -> int:
    """Copy the indexed snapshots of `source` into `target` (the policy artifact); how many there were."""
    entries = read_index(source)
    if entries:
        target.mkdir(parents=True, exist_ok=True)
        for entry in entries:
            shutil.copy2(source / entry["file"], target / entry["file"])
        shutil.copy2(source / INDEX_FILE, target / INDEX_FILE)
    return len(entries)


def apply_snapshot(model: torch.nn.Module, directory: Path, entry: dict[str, Any]) -> torch.nn.Module:
    """The policy at `entry`'s step: `model` (fresh SFT weights) with the snapshot's parameters loaded; for a LoRA
    snapshot, the adapters are added, loaded and merged. Every saved tensor must find its parameter."""
    tensors = load_file(str(directory / entry["file"]))
    if entry.get("lora"):
        from rlhf_assets.ppo.value_head import add_lora

        model = add_lora(model, int(entry["lora"]["rank"]), float(entry["lora"]["alpha"]))
    result = model.load_state_dict(tensors, strict=False)
    if result.unexpected_keys:
        raise ValueError(f"{directory / entry['file']}: parameters the model does not have: "
                         f"{result.unexpected_keys[:3]}")
    return model.merge_and_unload() if entry.get("lora") else model
