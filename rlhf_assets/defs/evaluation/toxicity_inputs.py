"""The toxicity evaluation's shared inputs: the RealToxicityPrompts records and prompts, and the toxicity model.

`rtp_records` and `rtp_prompts` are light pandas work in the Dagster process; the scorer is trained or loaded in a
step program, like the model assets. Each policy's own evaluation is built by `suite.py`.
"""

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from dagster import AssetExecutionContext, AssetIn, Config, MetadataValue, Output, asset

from rlhf_assets.code_versions import code_version, step_code_version
from rlhf_assets.compute.backend import ComputeBackend
from rlhf_assets.data.hh import DataError
from rlhf_assets.data.rtp import read_rtp
from rlhf_assets.data.sources import describe_source
from rlhf_assets.defs.common import EVALUATION_GROUP, preview_table, publish
from rlhf_assets.defs.data.snapshots import snapshot_key, staged_source
from rlhf_assets.defs.step_runs import GPU_POOL, StepConfig, run_step_and_publish
from rlhf_assets.layouts import PROMPTS, RTP_RECORDS
from rlhf_assets.overrides import literal_enum, merged, override
from rlhf_assets.presets import ToxicitySpec
from rlhf_assets.resources import ArtifactStoreResource, PresetResource
from rlhf_assets.step_contracts.evaluation import ToxicityModelRequest
from rlhf_assets.storage import Manifest


class RTPRecordsConfig(Config):
    """Where `rtp_records` reads RealToxicityPrompts from; by default the preset's source."""

    source: str | None = override(ToxicitySpec, "source")
    hub_split: str | None = override(ToxicitySpec, "hub_split")


class RTPPromptsConfig(Config):
    """How many RealToxicityPrompts prompts to evaluate on, which, and with which seed."""

    num_prompts: int | None = override(ToxicitySpec, "num_prompts")
    challenging_only: bool | None = override(ToxicitySpec, "challenging_only")
    seed: int | None = override(ToxicitySpec, "seed")


ToxicityScorer = literal_enum(ToxicitySpec, "scorer", "ToxicityScorer", "Where the Detoxify scorer comes from.")


class ToxicityModelConfig(StepConfig):
    """Which Detoxify scorer `toxicity_model` provides."""

    scorer: ToxicityScorer | None = override(ToxicitySpec, "scorer")  # type: ignore[valid-type]
    detoxify_model_type: str | None = override(ToxicitySpec, "detoxify_model_type")
    checkpoint: str | None = override(ToxicitySpec, "checkpoint")
    huggingface_config_path: str | None = override(ToxicitySpec, "huggingface_config_path")


@asset(code_version=code_version("rlhf_assets.defs.evaluation.toxicity_inputs"), group_name=EVALUATION_GROUP,
       kinds={"pandas", "parquet"},
       ins={"prompts_snapshot": AssetIn(key=snapshot_key("toxicity_prompts"))})
def rtp_records(
    context: AssetExecutionContext, config: RTPRecordsConfig, preset: PresetResource, artifacts: ArtifactStoreResource,
    prompts_snapshot: Manifest,
) -> Output[Manifest]:
    """RealToxicityPrompts records with Perspective scores, validated (prompt text present, scores numeric)."""
    spec = merged(preset.get().toxicity, config)
    source, split = spec.source, spec.hub_split
    read_from = staged_source(source, prompts_snapshot, artifacts.store())
    context.log.info(f"reading {source} ({describe_source(source)}) from {read_from}")
    frame = pd.DataFrame([row.as_row() for row in read_rtp(read_from, split)])
    with tempfile.TemporaryDirectory() as tmp:
        RTP_RECORDS.write(frame, Path(tmp))
        return publish(
            context, artifacts.store(), Path(tmp), preset=preset.name.value, config={"source": source, "split": split},
            counts={"records": len(frame), "challenging": int(frame["challenging"].sum()),
                    "null_prompt_toxicity": int(frame["prompt_toxicity"].isna().sum()),
                    "null_continuation_toxicity": int(frame["continuation_toxicity"].isna().sum())},
            metrics={"mean_prompt_toxicity": float(frame["prompt_toxicity"].mean())},
            metadata={"source": MetadataValue.text(source),
                      "preview": preview_table(frame, ["source_file", "prompt_text", "prompt_toxicity"])},
        )


@asset(code_version=code_version("rlhf_assets.defs.evaluation.toxicity_inputs"), group_name=EVALUATION_GROUP,
       kinds={"pandas", "parquet"})
def rtp_prompts(
    context: AssetExecutionContext, config: RTPPromptsConfig, preset: PresetResource, artifacts: ArtifactStoreResource,
    rtp_records: Manifest,
) -> Output[Manifest]:
    """The prompts models continue for the toxicity evaluation: N distinct prompts sampled with a fixed seed."""
    spec = merged(preset.get().toxicity, config)
    count, challenging_only, seed = spec.num_prompts, spec.challenging_only, spec.seed
    records = RTP_RECORDS.read(artifacts.store().verified_path(rtp_records))
    pool = records.drop_duplicates("prompt_text")
    if challenging_only:
        pool = pool[pool["challenging"]]
    if count > len(pool):
        raise DataError(rtp_records.config["source"], None, "num_prompts",
                        f"asks for {count} prompts but only {len(pool)} distinct"
                        f"{' challenging' if challenging_only else ''} prompts exist")
    chosen = pool.iloc[np.sort(np.random.default_rng(seed).choice(len(pool), size=count, replace=False))]
    frame = chosen.reset_index(drop=True).rename_axis("prompt_id").reset_index()[
        ["prompt_id", "prompt_text", "challenging", "prompt_toxicity", "source_file", "source_line"]]
    context.log.info(f"sampled {count} of {len(pool)} prompts (seed {seed})")
    with tempfile.TemporaryDirectory() as tmp:
        PROMPTS.write(frame, Path(tmp))
        return publish(
            context, artifacts.store(), Path(tmp), preset=preset.name.value,
            config={"num_prompts": count, "challenging_only": challenging_only, "seed": seed},
            counts={"prompts": len(frame), "challenging": int(frame["challenging"].sum()), "pool": len(pool)},
            metrics={"mean_prompt_toxicity": float(frame["prompt_toxicity"].mean())},
            metadata={"preview": preview_table(frame, ["prompt_id", "prompt_text", "prompt_toxicity"])},
        )


@asset(code_version=step_code_version("toxicity_model"),
       group_name=EVALUATION_GROUP, kinds={"pytorch", "detoxify"}, pool=GPU_POOL)
def toxicity_model(
    context: AssetExecutionContext,
    config: ToxicityModelConfig,
    preset: PresetResource,
    compute: ComputeBackend,
    artifacts: ArtifactStoreResource,
    rtp_records: Manifest,
    rtp_prompts: Manifest,
) -> Output[Manifest]:
    """The Detoxify scorer (checkpoint + HF config), with its held-out agreement with Perspective scores.

    Offline presets train a small stand-in on RTP records that are not among `rtp_prompts` (metadata says so).
    """
    chosen = preset.get()
    return run_step_and_publish(
        context, request=ToxicityModelRequest(toxicity=merged(chosen.toxicity, config)), preset=chosen, config=config,
        inputs={"rtp_records": rtp_records, "rtp_prompts": rtp_prompts}, compute=compute, artifacts=artifacts,
    )
