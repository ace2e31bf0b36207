"""Step: the reward model, trained on chosen/rejected pairs with TRL's RewardTrainer or loaded from trlx.

`train`: a one-label sequence-classification head on the SFT model (as the recipe's RM was), Bradley-Terry loss (TRL).
`pretrained`: a trlx `GPTRewardModel` checkpoint (e.g. `Dahoas/gptj-rm-static`) converted to the same format.
Both are read at the EOS after prompt + response (`RewardReadout`, recorded in `reward_model.json`): the trained
one is trained at that position, the pretrained one was. Both report held-out pairwise accuracy: the share of
test pairs where chosen scores above rejected.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import torch
from datasets import Dataset
from pydantic import ValidationError
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, PreTrainedTokenizerBase
from trl import RewardConfig, RewardTrainer

from rlhf_assets.compute.memory_plan import ModelShape, Precision, finetune_plan
from rlhf_assets.modeling.base import BaseModelRef, count_parameters
from rlhf_assets.modeling.complete_load import load_complete
from rlhf_assets.modeling.encoding import encode_prompt_response
from rlhf_assets.modeling.reward_model import (
    RewardModelScorer,
    RewardReadout,
    eos_readout,
    last_attended_positions,
    load_trlx_reward_model,
    reward_scores,
    rewards_at,
)
from rlhf_assets.specs import RewardSpec
from rlhf_assets.step_contracts.base import Markdown
from rlhf_assets.step_contracts.models import RewardReport, RewardRequest
from rlhf_assets.steps.data_io import read_split
from rlhf_assets.steps.memory import check_memory_plan, this_gpu, training_ranks
from rlhf_assets.steps.progress import RuntimeProgressCallback, curve_markdown
from rlhf_assets.steps.runtime import StepInputError, StepRuntime, run_step
from rlhf_assets.steps.training import (
    CheckpointMarkerCallback,
    last_checkpoint,
    prepared,
    save_trained_model,
    trainer_arguments,
)

REWARD_INFO_FILE = "reward_model.json"


def encode_pairs(
    frame: pd.DataFrame, tokenizer: PreTrainedTokenizerBase, spec: RewardSpec, append_eos: bool
) -> Dataset:
    """Token ids of prompt+chosen and prompt+rejected, prompt cut from the left so both endings survive."""
    rows = []
    for prompt, chosen, rejected in zip(frame["prompt"], frame["chosen"], frame["rejected"], strict=True):
        encoded = [
            encode_prompt_response(tokenizer, prompt, response, max_length=spec.max_length,
                                   max_response_tokens=spec.max_response_tokens, add_eos=append_eos).input_ids
            for response in (chosen, rejected)
        ]
        rows.append({"chosen_ids": encoded[0], "rejected_ids": encoded[1]})
    return Dataset.from_list(rows)


def pairwise_accuracy(model: torch.nn.Module, pairs: Dataset, readout: RewardReadout) -> tuple[float, float]:
    """(accuracy, mean margin) of chosen over rejected on held-out pairs."""
    chosen = reward_scores(model, pairs["chosen_ids"], readout)
    rejected = reward_scores(model, pairs["rejected_ids"], readout)
    return float((chosen > rejected).float().mean()), float((chosen - rejected).mean())


class EosReadRewardTrainer(RewardTrainer):
    """TRL's RewardTrainer with the Bradley-Terry loss taken at each sequence's EOS (its last attended token).

    TRL reads the model's own pooled logit, which with pad = EOS is the token before the EOS; the head would then
    be trained at one position and read (trlx-style) at another. The loss, accuracy and margin are TRL's.
    """

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        mask = inputs["attention_mask"]
        rewards = rewards_at(model, inputs["input_ids"], mask, last_attended_positions(mask))
        chosen, rejected = torch.chunk(rewards, chunks=2)
        loss = -nn.functional.logsigmoid(chosen - rejected).mean()
        if self.args.center_rewards_coefficient is not None:
            loss += self.args.center_rewards_coefficient * torch.mean((chosen + rejected) ** 2)
        with torch.no_grad():
            accuracy = self.accelerator.gather_for_metrics((chosen > rejected).float().mean()).mean()
            margin = self.accelerator.gather_for_metrics((chosen - rejected).mean()).mean()
            self._metrics[mode]["accuracy"].append(accuracy.item())
            self._metrics[mode]["margin"].append(margin.item())
            self._metrics[mode]["mean_reward"].append(rewards.mean().item())
        return (loss, {"rewards": rewards}) if return_outputs else loss


def train_reward_model(runtime: StepRuntime, request: RewardRequest, held_out: pd.DataFrame
                       ) -> tuple[RewardReadout, RewardReport]:
    """Fit the reward head and trunk on preference pairs from the SFT checkpoint (TRL RewardTrainer)."""
    spec, train_split = request.reward, request.train_split
    base = BaseModelRef.read(runtime.channel("sft_model"))
    shape = ModelShape.from_config(AutoConfig.from_pretrained(base.weights, num_labels=1), classifier=True)
    plan = finetune_plan("reward_model", shape, Precision.from_environment(), training_ranks(),
                         batch_size=spec.batch_size, max_length=spec.max_length, sequences_per_row=2,
                         language_model_head=False, gpu=this_gpu())
    memory_plan = check_memory_plan(runtime, plan, request.force_memory_plan)
    tokenizer = base.tokenizer()
    readout = eos_readout(tokenizer.eos_token_id)
    model = load_complete(  # a new one-output head on the trunk, in place of its language-model head
        AutoModelForSequenceClassification, base.weights, new_head=("score.",),
        dropped_head=("embed_out.", "lm_head."), num_labels=1, pad_token_id=tokenizer.pad_token_id
    )
    train = encode_pairs(read_split(runtime.channel("preference_dataset"), train_split, spec.max_train_rows),
                         tokenizer, spec, append_eos=readout.append_eos)
    runtime.log(f"reward model on {len(train)} preference pairs; {count_parameters(model):,} parameters")
    progress = RuntimeProgressCallback(runtime)
    args = RewardConfig(**trainer_arguments(spec, runtime), max_length=None, disable_dropout=True)
    trainer = prepared(EosReadRewardTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer,
                                            callbacks=[progress, CheckpointMarkerCallback()]), runtime)
    result = trainer.train(resume_from_checkpoint=last_checkpoint(runtime))
    accuracy, margin = pairwise_accuracy(model, encode_pairs(held_out, tokenizer, spec, readout.append_eos), readout)
    save_trained_model(trainer, runtime)
    return readout, RewardReport(
        train_loss=float(result.training_loss), train_rows=len(train), global_steps=int(trainer.state.global_step),
        parameter_count=count_parameters(model), eval_accuracy=accuracy, eval_mean_margin=margin,
        eval_pairs=len(held_out), mode=spec.mode, train_split=train_split, readout=readout_text(readout),
        loss_curve=Markdown(curve_markdown(progress.history, ("loss", "accuracy"), "Reward-model training")),
        memory_plan=memory_plan)


def readout_text(readout: RewardReadout) -> str:
    """Where the score is read, for people: the rule and the token."""
    return f"{readout.rule} (token {readout.eos_token_id})"


def load_pretrained_reward_model(runtime: StepRuntime, request: RewardRequest, held_out: pd.DataFrame
                                 ) -> tuple[RewardReadout, RewardReport]:
    """Convert a published trlx reward model into our format and measure it on the held-out pairs."""
    spec = request.reward
    if not spec.pretrained_id or not spec.pretrained_trunk:
        raise StepInputError("reward mode 'pretrained' needs pretrained_id and pretrained_trunk")
    checkpoint = runtime.staged("reward_snapshot", spec.pretrained_id)
    trunk = runtime.channel("sft_model")  # the base model's config and tokenizer, as the preset requires
    runtime.log(f"loading trlx reward model {spec.pretrained_id} from {checkpoint} over the config of "
                f"{spec.pretrained_trunk} (from the SFT model's lineage)")
    tokenizer = AutoTokenizer.from_pretrained(trunk)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    model = load_trlx_reward_model(str(checkpoint), str(trunk), tokenizer.pad_token_id)
    readout = eos_readout(tokenizer.eos_token_id)
    accuracy, margin = pairwise_accuracy(model, encode_pairs(held_out, tokenizer, spec, readout.append_eos), readout)
    model.save_pretrained(runtime.model_dir, safe_serialization=True)
    tokenizer.save_pretrained(runtime.model_dir)
    return readout, RewardReport(parameter_count=count_parameters(model), eval_accuracy=accuracy,
                                 eval_mean_margin=margin, eval_pairs=len(held_out), mode=spec.mode,
                                 train_split=request.train_split, readout=readout_text(readout),
                                 source=spec.pretrained_id)


def main(runtime: StepRuntime) -> None:
    """Train or load the reward model, record where it is read (`RewardReadout`), report held-out accuracy.

    The request's `train_split` picks the training pairs: `train` for the reward model PPO optimises against,
    `judge_train` for the independent judge (`judge_model`); both are scored on the same `test` pairs.
    """
    request = runtime.request(RewardRequest)
    spec = request.reward
    torch.manual_seed(spec.seed)
    held_out = read_split(runtime.channel("preference_dataset"), "test", spec.eval_rows)
    build = train_reward_model if spec.mode == "train" else load_pretrained_reward_model
    readout, report = build(runtime, request, held_out)
    info = {"mode": spec.mode, "readout": readout.model_dump(), "max_length": spec.max_length}
    (runtime.model_dir / REWARD_INFO_FILE).write_text(json.dumps(info, indent=2))
    runtime.log(f"reward model ready: held-out pairwise accuracy {report.eval_accuracy:.3f} "
                f"on {len(held_out)} pairs")
    runtime.report(report)


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


if __name__ == "__main__":
    run_step(main)
