"""Which hub repositories (or local files standing in for them) a preset reads, by the role each plays.

Every model and dataset a preset takes from outside is staged once as a `hub_snapshots/<role>` asset: repo id,
the commit the revision resolved to, and the content hash of the files. Steps read the snapshot, never the hub,
so a SageMaker job in a VPC without internet runs, and two runs of one snapshot train on the same bytes. The
roles are fixed (the asset graph does not change with the preset); a role the preset does not use stages
nothing and says so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from rlhf_assets.data.sources import describe_source
from rlhf_assets.specs import Preset

# Model files a snapshot keeps: config, tokenizer and PyTorch weights (never Flax / TensorFlow copies).
MODEL_PATTERNS = ("*.json", "*.txt", "*.model", "*.safetensors", "*.bin", "*.pt")
DATASET_PATTERNS = ("*.parquet", "*.jsonl", "*.jsonl.gz", "*.json", "*.json.gz", "*.arrow", "*.md")


class HubSource(BaseModel):
    """One outside source: a hub repository at a revision, or a local file or directory standing in for one."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: str = Field(description="What the graph uses it for (the asset hub_snapshots/<role>)")
    source: str | None = Field(description="Hub repo id or local path; None: the preset does not use this role")
    repo_type: Literal["model", "dataset"] = Field(description="Hub repository type")
    revision: str = Field("main", description="Branch, tag or commit to resolve")
    allow_patterns: tuple[str, ...] = Field(description="Files kept from the repository")

    @property
    def is_local(self) -> bool:
        """A local file or directory (the offline preset's data), copied instead of downloaded."""
        return self.source is not None and Path(self.source).expanduser().exists()


def _hub_or_local(source: str | None) -> str | None:
    """`source` unless it names nothing to stage (a tiny model built locally)."""
    if source is None:
        return None
    if describe_source(source) == "missing_local_path":
        raise ValueError(f"{source}: the path does not exist")
    return source


def preset_sources(preset: Preset) -> dict[str, HubSource]:
    """The preset's outside sources by role: preference data, base model, pretrained reward model, RTP prompts."""
    reward = preset.reward
    return {
        "preference_data": HubSource(role="preference_data", source=_hub_or_local(preset.data.source),
                                     repo_type="dataset", revision=preset.data.revision,
                                     allow_patterns=DATASET_PATTERNS),
        "base_model": HubSource(role="base_model", source=_hub_or_local(preset.base_model.hub_id), repo_type="model",
                                revision=preset.base_model.revision, allow_patterns=MODEL_PATTERNS),
        "reward_model": HubSource(
            role="reward_model", source=_hub_or_local(reward.pretrained_id if reward.mode == "pretrained" else None),
            repo_type="model", revision=reward.pretrained_revision, allow_patterns=("*.pt", "*.bin", "*.json")),
        "toxicity_prompts": HubSource(role="toxicity_prompts", source=_hub_or_local(preset.toxicity.source),
                                      repo_type="dataset", revision=preset.toxicity.revision,
                                      allow_patterns=DATASET_PATTERNS),
    }


SNAPSHOT_ROLES = ("preference_data", "base_model", "reward_model", "toxicity_prompts")
SNAPSHOT_FILE = "snapshot.json"
FILES_DIR = "files"  # the repository's files, apart from the record (a dataset loader reads the whole folder)


class NotStagedError(ValueError):
    """A source a step needs is not in the snapshot it was given."""


def staged_path(directory: Path, source: str) -> Path:
    """Where to read `source` from: the snapshot's files when it staged that hub repository, the local path itself
    when the source is local. Anything else (a snapshot of another source, an unstaged hub id) is refused, so no
    step silently falls back to the hub."""
    if describe_source(source) != "hub_dataset":
        return Path(source).expanduser()
    record_file = directory / SNAPSHOT_FILE
    if not record_file.is_file():
        raise NotStagedError(f"{directory} is not a hub snapshot ({SNAPSHOT_FILE} missing)")
    record = json.loads(record_file.read_text())
    if record.get("source") != source or not record.get("files"):
        raise NotStagedError(f"{source!r} is not staged: the snapshot of {record.get('role')!r} holds "
                             f"{record.get('source')!r}; materialize hub_snapshots/{record.get('role')} for it")
    return directory / FILES_DIR
