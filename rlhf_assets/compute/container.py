"""The SageMaker training-container contract, emulated in a local directory.

A SageMaker job sees its inputs under `/opt/ml/input/data/<channel>`, writes the model to `/opt/ml/model`,
keeps checkpoints in `/opt/ml/checkpoints` (synced to S3, restored after a spot interruption) and learns all of
that from `SM_*` environment variables. The local backend builds the same layout in a scratch directory and
sets the same variables, so a step program tested here runs unchanged in a real job.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from rlhf_assets.artifact_files import regular_files
from rlhf_assets.contract import (
    CHECKPOINT_ENV,
    CURRENT_HOST_ENV,
    HOSTS_ENV,
    MODEL_DIR_ENV,
    NUM_GPUS_ENV,
    OUTPUT_DATA_DIR_ENV,
    channel_env,
    failure_file,
    input_hash_env,
)


def stage_channel(source: Path, target: Path, hard_links: bool = True) -> None:
    """Give the step its own copy of a published artifact, as a SageMaker job gets its own download.

    The step re-hashes this copy before first use (`StepRuntime.channel`, against the hash the lineage records),
    and nothing done to the store afterwards reaches it: files are hard links where the store shares the disk
    (free: a file replaced in the store leaves the linked one as it was; published files are owner-only, so
    nobody else can write into them), else copy-on-write clones where the filesystem has them, else copies.
    """
    target.mkdir(mode=0o700)
    for name in regular_files(source):
        destination = target / name
        destination.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            if not hard_links:
                raise OSError("hard links not wanted")
            os.link(source / name, destination)
        except OSError:  # another filesystem, or links not allowed there: a copy-on-write clone, else bytes
            _clone_or_copy(source / name, destination)


FICLONE = 0x40049409  # Linux ioctl: share the source's blocks copy-on-write (btrfs, XFS), as `cp --reflink` does


def _clone_or_copy(source: Path, destination: Path) -> None:
    with source.open("rb") as reader, destination.open("wb") as writer:
        try:
            fcntl.ioctl(writer.fileno(), FICLONE, reader.fileno())
        except OSError:  # not supported by this filesystem, or across filesystems
            shutil.copyfileobj(reader, writer, 1 << 20)


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
        """Lay out a fresh container tree with a private copy of each channel (`stage_channel`)."""
        if root.exists():
            shutil.rmtree(root)
        layout = cls(root=root, checkpoint_dir=checkpoint_dir)
        root.mkdir(mode=0o700, parents=True)
        for directory in (layout.model_dir, layout.output_dir, checkpoint_dir, root / "input" / "config"):
            directory.mkdir(parents=True, exist_ok=True)
        for name, source in channels.items():
            if not source.is_dir():
                raise FileNotFoundError(f"input channel {name!r}: {source} is not a directory")
            layout.channel_dir(name).parent.mkdir(parents=True, exist_ok=True)
            stage_channel(source, layout.channel_dir(name))
        (root / "input" / "config" / "resourceconfig.json").write_text(
            json.dumps({"current_host": "algo-1", "hosts": ["algo-1"]})
        )
        return layout

    def environment(self, channels: dict[str, str], num_gpus: int) -> dict[str, str]:
        """The `SM_*` variables a SageMaker container would carry for this layout, and each channel's recorded
        content hash (`channels`: name → hash) for the step to verify its copy against."""
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
        for name, content_hash in channels.items():
            env[channel_env(name)] = str(self.channel_dir(name))
            env[input_hash_env(name)] = content_hash
        return env
