"""Evaluation assets: RealToxicityPrompts, the Detoxify scorer, eval responses, toxicity and automatic preference.

`rtp_records` and `rtp_prompts` are light pandas work in the Dagster process; everything with torch runs in
step programs, like the model assets.
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
from rlhf_assets.presets import EvalSpec, GenerationSpec, ToxicitySpec
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


class SamplingConfig(StepConfig):
    """The seed both models sample with (e.g. to see how much a figure moves when only the draws change)."""

    sampling_seed: int | None = Field(default=None, description="Override the generation seed (SFT and RLHF "
                                      "always share it)")

    def generation(self, spec: GenerationSpec) -> GenerationSpec:
        """The preset's generation settings with the seed override applied."""
        return spec if self.sampling_seed is None else spec.model_copy(update={"seed": self.sampling_seed})


class ToxicityScoresConfig(SamplingConfig):
    """How many continuations `toxicity_scores` samples per prompt and model, and with which seed."""

    samples_per_prompt: int | None = Field(
        default=None, ge=1, description="Override k: continuations per prompt and model (paper 25, recipe 1)"
    )


class AutoPreferenceConfig(StepConfig):
    """The automatic judge's settings."""

    tie_margin: float | None = Field(default=None, ge=0.0, description="Override the tie margin, in standard "
                                     "deviations of the judge's scores on the eval responses")
    judge: str | None = Field(default=None, description="Judge model (hub id or directory); default: judge_model")


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


def _responses_preview(directory: Path) -> dict[str, MetadataValue]:
    frame = pd.read_parquet(directory / "responses.parquet")
    return {"preview": preview_table(frame, ["prompt_id", "prompt", "sft_response", "rlhf_response"])}


@asset(code_version=step_code_version("eval_responses"),
       group_name="evaluation", kinds={"pytorch", "parquet"}, pool=GPU_POOL)
def eval_responses(
    context: AssetExecutionContext,
    config: SamplingConfig,
    compute: ComputeBackend,
    artifacts: ArtifactStoreResource,
    sft_model: Manifest,
    ppo_policy: Manifest,
    eval_prompts: Manifest,
) -> Output[Manifest]:
    """SFT and RLHF responses to the held-out eval prompts (same generation settings and seed for both)."""
    preset = config.resolved_preset()
    evaluation = preset.evaluation.model_copy(update={"generation": config.generation(preset.evaluation.generation)})
    return run_step_and_publish(
        context, step="eval_responses", preset=preset, config=config,
        step_config={"evaluation": evaluation.model_dump()},
        inputs={"sft_model": sft_model, "ppo_policy": ppo_policy, "eval_prompts": eval_prompts},
        compute=compute, artifacts=artifacts, preview=_responses_preview,
    )


@asset(code_version=step_code_version("toxicity_scores"),
       group_name="evaluation", kinds={"pytorch", "detoxify"}, pool=GPU_POOL)
def toxicity_scores(
    context: AssetExecutionContext,
    config: ToxicityScoresConfig,
    compute: ComputeBackend,
    artifacts: ArtifactStoreResource,
    sft_model: Manifest,
    ppo_policy: Manifest,
    rtp_prompts: Manifest,
    toxicity_model: Manifest,
) -> Output[Manifest]:
    """Detoxify toxicity of SFT vs RLHF continuations of the RTP prompts (Gehman et al.), with bootstrap CIs.

    Metadata: mean toxicity (the recipe's figure), expected maximum toxicity and toxicity probability per model
    and the paired RLHF − SFT difference, each with a 95% CI, beside the recipe's reference figures.
    """
    preset = config.resolved_preset()
    toxicity = preset.toxicity.model_copy(update={"generation": config.generation(preset.toxicity.generation)})
    spec = toxicity.model_dump()
    if config.samples_per_prompt:
        spec = ToxicitySpec.model_validate({**spec, "samples_per_prompt": config.samples_per_prompt}).model_dump()
    return run_step_and_publish(
        context, step="toxicity_scores", preset=preset, config=config, step_config={"toxicity": spec},
        inputs={"sft_model": sft_model, "ppo_policy": ppo_policy, "rtp_prompts": rtp_prompts,
                "toxicity_model": toxicity_model},
        compute=compute, artifacts=artifacts,
    )


@asset(code_version=step_code_version("auto_preference"), group_name="evaluation", kinds={"pytorch"}, pool=GPU_POOL)
def auto_preference(
    context: AssetExecutionContext,
    config: AutoPreferenceConfig,
    compute: ComputeBackend,
    artifacts: ArtifactStoreResource,
    eval_responses: Manifest,
    reward_model: Manifest,
    judge_model: Manifest,
) -> Output[Manifest]:
    """Automatic pairwise judgement of RLHF vs SFT on the eval prompts by an independent judge (`judge_model`, or
    a configured one): win / tie / loss with Wilson CIs and a sign test. The reward model PPO was optimised
    against is shown beside it, labelled as such, never as the verdict."""
    preset = config.resolved_preset()
    updates = {"tie_margin": config.tie_margin, "judge": config.judge}
    evaluation = EvalSpec.model_validate(
        {**preset.evaluation.model_dump(), **{k: v for k, v in updates.items() if v is not None}})
    return run_step_and_publish(
        context, step="auto_preference", preset=preset, config=config,
        step_config={"evaluation": evaluation.model_dump(), "reward": preset.reward.model_dump(),
                     "judge": preset.judge.model_dump()},
        inputs={"eval_responses": eval_responses, "reward_model": reward_model, "judge_model": judge_model},
        compute=compute, artifacts=artifacts,
    )
