"""Step: produce the `base_model` artifact (tokenizer + weights or a hub pointer).

tiny preset: fit a BPE tokenizer on the training dialogues and initialise a small GPT-NeoX.
hub presets: take the model from its pinned snapshot (`hub_snapshots/base_model`): tokenizer, config and weights
into the artifact, so training steps never reach the hub. A local directory is recorded as a pointer instead.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from rlhf_assets.modeling.base import (
    TokenizerLoadError,
    build_tiny_gpt_neox,
    count_parameters,
    load_tokenizer,
    write_pointer,
)
from rlhf_assets.modeling.tokenizer import train_bpe_tokenizer
from rlhf_assets.step_contracts.models import BaseModelReport, BaseModelRequest
from rlhf_assets.steps.data_io import read_split
from rlhf_assets.steps.runtime import StepInputError, StepRuntime, run_step


def link_weights(staged: Path, out: Path) -> None:
    """Put the snapshot's config and weights in the model directory (hard links where the filesystem allows,
    so a 24 GB checkpoint is not copied twice on one disk)."""
    for path in sorted(p for p in staged.iterdir() if p.is_file() and p.suffix in (".json", ".safetensors", ".bin")):
        target = out / path.name
        try:
            os.link(path, target)
        except OSError:
            shutil.copyfile(path, target)


def main(runtime: StepRuntime) -> None:
    """Build or resolve the base model and write it, with its tokenizer, to the model dir."""
    request = runtime.request(BaseModelRequest)
    spec, seed = request.base_model, request.seed
    out = runtime.model_dir
    if spec.hub_id is None:
        train = read_split(runtime.channel("preference_dataset"), "train", spec.tokenizer_train_rows)
        texts = [t for row in train.itertuples() for t in (row.prompt + row.chosen, row.rejected)]
        runtime.log(f"training a {spec.vocab_size}-token BPE tokenizer on {len(texts)} texts")
        tokenizer = train_bpe_tokenizer(texts, spec.vocab_size)
        model = build_tiny_gpt_neox(
            tokenizer,
            num_layers=spec.num_layers,
            hidden_size=spec.hidden_size,
            num_heads=spec.num_heads,
            max_position_embeddings=spec.max_position_embeddings,
            seed=seed,
        )
        model.save_pretrained(out, safe_serialization=True)
        kind, source = "local", "tiny GPT-NeoX initialised from the preset"
        parameters = count_parameters(model)
    else:
        staged = runtime.staged("model_snapshot", spec.hub_id)
        runtime.log(f"reading tokenizer and config of {spec.hub_id} from {staged}")
        try:
            tokenizer = load_tokenizer(staged)
            config = AutoConfig.from_pretrained(staged)
        except (OSError, TokenizerLoadError) as exc:
            raise StepInputError(f"base model {spec.hub_id!r} cannot be loaded from {staged}: {exc}") from exc
        with torch.device("meta"):
            parameters = count_parameters(AutoModelForCausalLM.from_config(config))
        if staged == Path(spec.hub_id).expanduser():  # a local directory: weights are read where they are
            kind, source = "hub", spec.hub_id
        else:
            link_weights(staged, out)
            kind, source = "local", spec.hub_id
    tokenizer.save_pretrained(out)
    write_pointer(out, kind, source, parameters)
    runtime.log(f"base model ready: {parameters:,} parameters, vocabulary {len(tokenizer):,}")
    runtime.report(BaseModelReport(parameter_count=parameters, vocab_size=len(tokenizer), kind=kind, source=source))


if __name__ == "__main__":
    run_step(main)
