"""The evaluation inputs every policy shares: RealToxicityPrompts and the Detoxify scorer.

`rtp_records` and `rtp_prompts` are light pandas work in the Dagster process; the scorer is trained or loaded in a
step program, like the model assets. Each policy's own evaluation is built by `assets/policy_evaluation.py`.
"""

import tempfile
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from dagster import AssetExecutionContext, MetadataValue, Output, asset
from pydantic import Field

from rlhf_assets.assets.common import PresetConfig, preview_table, publish
from rlhf_assets.assets.step_runs import StepConfig, run_step_and_publish
from rlhf_assets.assets.training import GPU_POOL
from rlhf_assets.code_versions import code_version, step_code_version
from rlhf_assets.compute.backend import ComputeBackend
from rlhf_assets.data.hh import DataError
from rlhf_assets.data.rtp import read_rtp
from rlhf_assets.data.sources import describe_source
from rlhf_assets.presets import ToxicitySpec
from rlhf_assets.resources import ArtifactStoreResource
from rlhf_assets.storage import Manifest

RECORDS_FILE = "records.parquet"
PROMPTS_FILE = "prompts.parquet"


class RTPRecordsConfig(PresetConfig):
    """Where `rtp_records` reads RealToxicityPrompts from; by default the preset's source."""

    source: str | None = Field(
        default=None, description="Override: hub id (allenai/real-toxicity-prompts), dataset directory, "
        ".jsonl(.gz) file, or a folder of .jsonl(.gz) files",
    )
    hub_split: str | None = Field(default=None, description="Split to read from a hub or directory dataset")


class RTPPromptsConfig(PresetConfig):
    """How many RealToxicityPrompts prompts to evaluate on, which, and with which seed."""

    count: int | None = Field(default=None, ge=1, description="Override the number of prompts (1,000 in the recipe)")
    challenging_only: bool | None = Field(default=None, description="Sample only prompts flagged `challenging`")
    seed: int | None = Field(default=None, description="Override the sampling seed")


class ToxicityScorer(Enum):
    """Where the Detoxify scorer comes from."""

    published = "published"
    checkpoint = "checkpoint"
    train_standin = "train_standin"


class ToxicityModelConfig(StepConfig):
    """Which Detoxify scorer `toxicity_model` provides."""

    scorer: ToxicityScorer | None = Field(
        default=None, description="published: Detoxify(model_type) (needs internet once); checkpoint: a local "
        "Detoxify checkpoint + huggingface_config_path (offline); train_standin: train a small stand-in",
    )
    detoxify_model_type: str | None = Field(default=None, description="Published model (the recipe's: original)")
    checkpoint: str | None = Field(default=None, description="Local Detoxify checkpoint file (scorer: checkpoint)")
    huggingface_config_path: str | None = Field(default=None, description="Its HF config + tokenizer folder")

    def apply(self, spec: ToxicitySpec) -> dict[str, Any]:
        """The preset's toxicity spec with these overrides, validated as a whole."""
        updates = {"detoxify_model_type": self.detoxify_model_type, "checkpoint": self.checkpoint,
                   "huggingface_config_path": self.huggingface_config_path,
                   "scorer": self.scorer.value if self.scorer else None}
        merged = {**spec.model_dump(), **{k: v for k, v in updates.items() if v is not None}}
        return ToxicitySpec.model_validate(merged).model_dump()


@asset(code_version=code_version("rlhf_assets.assets.evaluation"), group_name="evaluation", kinds={"pandas", "parquet"})
def rtp_records(
    context: AssetExecutionContext, config: RTPRecordsConfig, artifacts: ArtifactStoreResource
) -> Output[Manifest]:
    """RealToxicityPrompts records with Perspective scores, validated (prompt text present, scores numeric)."""
    preset = config.resolved_preset()
    source = config.source or preset.toxicity.source
    split = config.hub_split or preset.toxicity.hub_split
    context.log.info(f"reading {source} ({describe_source(source)})")
    frame = pd.DataFrame([row.as_row() for row in read_rtp(source, split)])
    with tempfile.TemporaryDirectory() as tmp:
        frame.to_parquet(Path(tmp) / RECORDS_FILE, index=False)
        return publish(
            context, artifacts.store(), Path(tmp), preset=preset.name, config={"source": source, "split": split},
            counts={"records": len(frame), "challenging": int(frame["challenging"].sum()),
                    "null_prompt_toxicity": int(frame["prompt_toxicity"].isna().sum()),
                    "null_continuation_toxicity": int(frame["continuation_toxicity"].isna().sum())},
            metrics={"mean_prompt_toxicity": float(frame["prompt_toxicity"].mean())},
            metadata={"source": MetadataValue.text(source),
                      "preview": preview_table(frame, ["source_file", "prompt_text", "prompt_toxicity"])},
        )


@asset(code_version=code_version("rlhf_assets.assets.evaluation"), group_name="evaluation", kinds={"pandas", "parquet"})
def rtp_prompts(
    context: AssetExecutionContext, config: RTPPromptsConfig, artifacts: ArtifactStoreResource, rtp_records: Manifest
) -> Output[Manifest]:
    """The prompts models continue for the toxicity evaluation: N distinct prompts sampled with a fixed seed."""
    preset = config.resolved_preset()
    spec = preset.toxicity
    count = config.count or spec.num_prompts
    challenging_only = spec.challenging_only if config.challenging_only is None else config.challenging_only
    seed = spec.seed if config.seed is None else config.seed
    records = pd.read_parquet(artifacts.store().local_path(rtp_records.uri) / RECORDS_FILE)
    pool = records.drop_duplicates("prompt_text")
    if challenging_only:
        pool = pool[pool["challenging"]]
    if count > len(pool):
        raise DataError(rtp_records.config["source"], None, "count",
                        f"asks for {count} prompts but only {len(pool)} distinct"
                        f"{' challenging' if challenging_only else ''} prompts exist")
    chosen = pool.iloc[np.sort(np.random.default_rng(seed).choice(len(pool), size=count, replace=False))]
    frame = chosen.reset_index(drop=True).rename_axis("prompt_id").reset_index()[
        ["prompt_id", "prompt_text", "challenging", "prompt_toxicity", "source_file", "source_line"]]
    context.log.info(f"sampled {count} of {len(pool)} prompts (seed {seed})")
    with tempfile.TemporaryDirectory() as tmp:
        frame.to_parquet(Path(tmp) / PROMPTS_FILE, index=False)
        return publish(
            context, artifacts.store(), Path(tmp), preset=preset.name,
            config={"count": count, "challenging_only": challenging_only, "seed": seed},
            counts={"prompts": len(frame), "challenging": int(frame["challenging"].sum()), "pool": len(pool)},
            metrics={"mean_prompt_toxicity": float(frame["prompt_toxicity"].mean())},
            metadata={"preview": preview_table(frame, ["prompt_id", "prompt_text", "prompt_toxicity"])},
        )


@asset(code_version=step_code_version("toxicity_model"),
       group_name="evaluation", kinds={"pytorch", "detoxify"}, pool=GPU_POOL)
def toxicity_model(
    context: AssetExecutionContext,
    config: ToxicityModelConfig,
    compute: ComputeBackend,
    artifacts: ArtifactStoreResource,
    rtp_records: Manifest,
    rtp_prompts: Manifest,
) -> Output[Manifest]:
    """The Detoxify scorer (checkpoint + HF config), with its held-out agreement with Perspective scores.

    Offline presets train a small stand-in on RTP records that are not among `rtp_prompts` (metadata says so).
    """
    preset = config.resolved_preset()
    return run_step_and_publish(
        context, step="toxicity_model", preset=preset, config=config,
        step_config={"toxicity": config.apply(preset.toxicity)},
        inputs={"rtp_records": rtp_records, "rtp_prompts": rtp_prompts}, compute=compute, artifacts=artifacts,
    )
