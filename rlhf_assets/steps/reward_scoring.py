"""The reward model as a scorer inside a step: where it runs and how its artifact is loaded."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from pydantic import ValidationError
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rlhf_assets.modeling.complete_load import load_complete
from rlhf_assets.modeling.scoring import RewardReadout
from rlhf_assets.ppo.reward_scorer import RewardModelScorer
from rlhf_assets.steps.reward import REWARD_INFO_FILE
from rlhf_assets.steps.runtime import StepInputError


def reward_gpu(device_count: int, local_world_size: int, local_rank: int) -> int:
    """The GPU index for the reward model on this node: the spare one when the node has more GPUs than its
    training processes (the recipe: 8 GPUs, 7 ranks), else the main process's own."""
    return device_count - 1 if device_count > local_world_size else local_rank


def reward_device() -> torch.device:
    """Where the reward model runs: the recipe gives it a GPU of its own (7 training processes + 1 for the RM).

    Only the main process holds the reward model. What counts is this node's processes (`LOCAL_WORLD_SIZE`), not
    the job's (`WORLD_SIZE`: 14 on two p4d hosts, more than any node's 8 GPUs). Scores are computed in fp16 on
    GPU, as in the recipe.
    """
    if not torch.cuda.is_available():
        return torch.device("cpu")
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    index = reward_gpu(torch.cuda.device_count(), local_world_size, int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device(f"cuda:{index}")


def load_reward_scorer(
    directory: Path, *, max_length: int, max_response_tokens: int, batch_size: int
) -> RewardModelScorer:
    """The reward model artifact as a scorer, read where its artifact says (`RewardReadout`), never where
    `pad_token_id` would put it."""
    info_file = directory / REWARD_INFO_FILE
    if not info_file.exists():
        raise StepInputError(f"{directory} is not a reward_model artifact ({REWARD_INFO_FILE} missing)")
    info = json.loads(info_file.read_text())
    try:
        readout = RewardReadout.model_validate(info.get("readout"))
    except ValidationError as exc:
        raise StepInputError(f"{info_file}: no valid `readout` (where the reward head is read); re-materialize "
                             f"the reward model with this version: {exc.errors()[0]['msg']}") from exc
    tokenizer = AutoTokenizer.from_pretrained(directory)
    device = reward_device()
    model = load_complete(
        AutoModelForSequenceClassification, directory, dtype=torch.float16 if device.type == "cuda" else torch.float32
    ).to(device)
    return RewardModelScorer(model, tokenizer, readout=readout, max_length=max_length,
                             max_response_tokens=max_response_tokens, batch_size=batch_size,
                             trained_length=info.get("max_length"))
