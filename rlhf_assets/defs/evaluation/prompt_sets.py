"""Declared prompt sets as assets: `<name>_prompts`, the texts every policy's `<name>_toxicity_scores` continues.

The code location reads the declarations when it loads (`settings.DeploymentSettings`: `prompt_sets.yaml` in the
project, or the file `RLHF_PROMPT_SETS` names), so adding a prompt set is an edit of that file and a reload: no
code. Each set's toxicity assets are built per policy by `defs/evaluation/suite.py`, with the same step and metrics as
RealToxicityPrompts.
"""

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from dagster import AssetExecutionContext, AssetsDefinition, MetadataValue, Output, asset

from rlhf_assets.artifact_files import hash_json
from rlhf_assets.code_versions import code_version
from rlhf_assets.data.hh import DataError
from rlhf_assets.data.prompt_sets import PromptSetSpec, normalized, read_prompt_set
from rlhf_assets.defs.common import EVALUATION_GROUP, preview_table, publish
from rlhf_assets.layouts import PROMPTS
from rlhf_assets.resources import ArtifactStoreResource, PresetResource
from rlhf_assets.storage import Manifest


@dataclass(frozen=True)
class SampledPrompts:
    """The prompts a set's asset publishes, and what reading the source found."""

    frame: pd.DataFrame  # the `prompts.parquet` table every toxicity step reads, with where each text came from
    read: int  # prompts read from the source
    distinct: int  # after dropping repeats (whitespace-normalized)
    duplicates: pd.DataFrame  # each dropped repeat: its file and line, and the line it repeats


def sample_prompts(spec: PromptSetSpec) -> SampledPrompts:
    """The set's distinct prompts (whitespace-normalized), sampled to `num_prompts` with `seed`, in source order.
    Repeats are dropped, counted and listed, never silently: 700 lines that give 623 prompts say so."""
    records = read_prompt_set(spec)
    frame = pd.DataFrame([{"text": r.text, "source_file": r.source_file, "source_line": r.source_line}
                          for r in records])
    keys = frame["text"].map(normalized)
    repeated = keys.duplicated()
    first = frame.loc[~repeated].assign(key=keys[~repeated]).set_index("key")
    duplicates = frame.loc[repeated, ["source_file", "source_line"]].assign(
        repeats=[f"{first.at[key, 'source_file']}:{first.at[key, 'source_line']}" for key in keys[repeated]])
    pool = frame.loc[~repeated].reset_index(drop=True)
    count = spec.num_prompts or len(pool)
    if count > len(pool):
        raise DataError(spec.source, None, "num_prompts", f"asks for {count} prompts but prompt set {spec.name!r} "
                        f"has {len(pool)} distinct prompts")
    chosen = pool.iloc[np.sort(np.random.default_rng(spec.seed).choice(len(pool), size=count, replace=False))]
    chosen = chosen.reset_index(drop=True).rename_axis("prompt_id").reset_index()
    chosen["prompt_text"] = chosen["text"].map(spec.prompt)
    return SampledPrompts(chosen[list(PROMPTS.columns) + ["text", "source_file", "source_line"]], read=len(frame),
                          distinct=len(pool), duplicates=duplicates.reset_index(drop=True))


def prompt_set_asset(spec: PromptSetSpec) -> AssetsDefinition:
    """The `<name>_prompts` asset of one declared prompt set."""

    # The declaration is part of the code version: editing it in prompt_sets.yaml marks the asset stale.
    code = code_version("rlhf_assets.defs.evaluation.prompt_sets")
    version = hash_json({"code": code, "spec": spec.model_dump()})[:16]

    @asset(name=f"{spec.name}_prompts", code_version=version,
           group_name=EVALUATION_GROUP, kinds={"pandas", "parquet"},
           description=f"Prompt set `{spec.name}` for toxicity evaluation, from {spec.source} (field "
                       f"`{spec.text_field}`). {spec.description}".strip())
    def prompt_set(context: AssetExecutionContext, preset: PresetResource,
                   artifacts: ArtifactStoreResource) -> Output[Manifest]:
        context.log.info(f"reading prompt set {spec.name} from {spec.source}")
        sampled = sample_prompts(spec)
        frame = sampled.frame
        repeats = len(sampled.duplicates)
        context.log.info(f"{sampled.read} prompts read, {repeats} repeats dropped: {len(frame)} of "
                         f"{sampled.distinct} distinct prompts used (seed {spec.seed})")
        if repeats:
            context.log.warning(f"{spec.name}: {repeats} repeated prompts dropped, e.g. "
                                + ", ".join(f"{r.source_file}:{r.source_line} (repeats {r.repeats})"
                                            for r in sampled.duplicates.head(3).itertuples()))
        metadata = {"source": MetadataValue.text(spec.source), "template": MetadataValue.text(spec.template),
                    "preview": preview_table(frame, ["prompt_id", "text", "source_file", "source_line"])}
        if repeats:
            metadata["repeats_dropped"] = preview_table(sampled.duplicates, ["source_file", "source_line", "repeats"])
        with tempfile.TemporaryDirectory() as tmp:
            PROMPTS.write(frame, Path(tmp))
            return publish(
                context, artifacts.store(), Path(tmp), preset=preset.get().name, config=spec.model_dump(),
                counts={"prompts": len(frame), "read_from_source": sampled.read, "distinct_in_source": sampled.distinct,
                        "repeats_dropped": repeats},
                metadata=metadata,
            )

    return prompt_set

