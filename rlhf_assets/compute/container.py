"""The SageMaker training-container contract, emulated in a local directory.

A SageMaker job sees its inputs under `/opt/ml/input/data/<channel>`, writes the model to `/opt/ml/model`,
keeps checkpoints in `/opt/ml/checkpoints` (synced to S3, restored after a spot interruption) and learns all of
that from `SM_*` environment variables. The local backend builds the same layout in a scratch directory and
sets the same variables, so a step program tested here runs unchanged in a real job.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from rlhf_assets.contract import (
    CHECKPOINT_ENV,
    CURRENT_HOST_ENV,
    HOSTS_ENV,
    MODEL_DIR_ENV,
    NUM_GPUS_ENV,
    OUTPUT_DATA_DIR_ENV,
    channel_env,
    failure_file,
)


@dataclass(frozen=True)
class ContainerLayout:
    """The `/opt/ml` tree of one step run, rooted in a local scratch directory."""

    root: Path
    checkpoint_dir: Path

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def output_dir(self) -> Path:
        return self.root / "output" / "data"

    @property
    def failure_file(self) -> Path:
        return failure_file(self.output_dir)

    def failure_reason(self) -> str | None:
        """The step's own account of why it failed, as SageMaker would report it."""
        return self.failure_file.read_text().strip() if self.failure_file.exists() else None

    def channel_dir(self, name: str) -> Path:
        return self.root / "input" / "data" / name

    @classmethod
    def create(cls, root: Path, checkpoint_dir: Path, channels: dict[str, Path]) -> ContainerLayout:
        """Lay out a fresh container tree; channels are linked, not copied, so big inputs cost nothing."""
        if root.exists():
            shutil.rmtree(root)
        layout = cls(root=root, checkpoint_dir=checkpoint_dir)
        for directory in (layout.model_dir, layout.output_dir, checkpoint_dir, root / "input" / "config"):
            directory.mkdir(parents=True, exist_ok=True)
        for name, source in channels.items():
            if not source.is_dir():
                raise FileNotFoundError(f"input channel {name!r}: {source} is not a directory")
            layout.channel_dir(name).parent.mkdir(parents=True, exist_ok=True)
            layout.channel_dir(name).symlink_to(source.resolve(), target_is_directory=True)
        (root / "input" / "config" / "resourceconfig.json").write_text(
            json.dumps({"current_host": "algo-1", "hosts": ["algo-1"]})
        )
        return layout

    def environment(self, channels: list[str], num_gpus: int) -> dict[str, str]:
        """The `SM_*` variables a SageMaker container would carry for this layout."""
        env = {
            MODEL_DIR_ENV: str(self.model_dir),
            OUTPUT_DATA_DIR_ENV: str(self.output_dir),
            "SM_INPUT_DIR": str(self.root / "input"),
            "SM_CHANNELS": json.dumps(sorted(channels)),
            HOSTS_ENV: json.dumps(["algo-1"]),
            CURRENT_HOST_ENV: "algo-1",
            NUM_GPUS_ENV: str(num_gpus),
            CHECKPOINT_ENV: str(self.checkpoint_dir),
        }
        for name in channels:
            env[channel_env(name)] = str(self.channel_dir(name))
        return env
