"""Declared prompt sets as assets: `<name>_prompts`, the texts every policy's `<name>_toxicity_scores` continues.

The code location reads the declarations when it loads (`prompt_sets.yaml` in the project, or the file
`RLHF_PROMPT_SETS` names), so adding a prompt set is an edit of that file and a reload: no code. Each set's
toxicity assets are built per policy by `assets/policy_evaluation.py`, with the same step and metrics as
RealToxicityPrompts.
"""

import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from dagster import AssetExecutionContext, AssetsDefinition, MetadataValue, Output, asset

from rlhf_assets.assets.common import preview_table, publish
from rlhf_assets.code_versions import code_version
from rlhf_assets.data.hh import DataError
from rlhf_assets.data.prompt_sets import PromptSetSpec, load_prompt_sets, normalized, read_prompt_set
from rlhf_assets.layouts import PROMPTS
from rlhf_assets.presets import PROJECT_ROOT
from rlhf_assets.resources import ArtifactStoreResource, PresetResource
from rlhf_assets.storage import Manifest, hash_json

EVALUATION_GROUP = "evaluation"


def prompt_sets_file() -> Path:
    """`RLHF_PROMPT_SETS`, or `prompt_sets.yaml` in the project."""
    return Path(os.environ.get("RLHF_PROMPT_SETS", str(PROJECT_ROOT / "prompt_sets.yaml")))


def sample_prompts(spec: PromptSetSpec) -> tuple[pd.DataFrame, int]:
    """The set's distinct prompts (whitespace-normalized), sampled to `num_prompts` with `seed`, in source order,
    as the `prompts.parquet` table every toxicity step reads; and how many distinct prompts there were."""
    records = read_prompt_set(spec)
    frame = pd.DataFrame([{"text": r.text, "source_file": r.source_file, "source_line": r.source_line}
                          for r in records])
    pool = frame.loc[~frame["text"].map(normalized).duplicated()].reset_index(drop=True)
    count = spec.num_prompts or len(pool)
    if count > len(pool):
        raise DataError(spec.source, None, "num_prompts", f"asks for {count} prompts but prompt set {spec.name!r} "
                        f"has {len(pool)} distinct prompts")
    chosen = pool.iloc[np.sort(np.random.default_rng(spec.seed).choice(len(pool), size=count, replace=False))]
    chosen = chosen.reset_index(drop=True).rename_axis("prompt_id").reset_index()
    chosen["prompt_text"] = chosen["text"].map(spec.prompt)
    return chosen[list(PROMPTS.columns) + ["text", "source_file", "source_line"]], len(pool)


def prompt_set_asset(spec: PromptSetSpec) -> AssetsDefinition:
    """The `<name>_prompts` asset of one declared prompt set."""

    # The declaration is part of the code version: editing it in prompt_sets.yaml marks the asset stale.
    version = hash_json({"code": code_version("rlhf_assets.assets.prompt_sets"), "spec": spec.model_dump()})[:16]

    @asset(name=f"{spec.name}_prompts", code_version=version,
           group_name=EVALUATION_GROUP, kinds={"pandas", "parquet"},
           description=f"Prompt set `{spec.name}` for toxicity evaluation, from {spec.source} (field "
                       f"`{spec.text_field}`). {spec.description}".strip())
    def prompt_set(context: AssetExecutionContext, preset: PresetResource,
                   artifacts: ArtifactStoreResource) -> Output[Manifest]:
        context.log.info(f"reading prompt set {spec.name} from {spec.source}")
        frame, distinct = sample_prompts(spec)
        context.log.info(f"{len(frame)} of {distinct} distinct prompts (seed {spec.seed})")
        with tempfile.TemporaryDirectory() as tmp:
            PROMPTS.write(frame, Path(tmp))
            return publish(
                context, artifacts.store(), Path(tmp), preset=preset.get().name, config=spec.model_dump(),
                counts={"prompts": len(frame), "distinct_in_source": distinct},
                metadata={"source": MetadataValue.text(spec.source),
                          "template": MetadataValue.text(spec.template),
                          "preview": preview_table(frame, ["prompt_id", "text", "source_file", "source_line"])},
            )

    return prompt_set


PROMPT_SETS = load_prompt_sets(prompt_sets_file())
prompt_set_assets = [prompt_set_asset(spec) for spec in PROMPT_SETS]
