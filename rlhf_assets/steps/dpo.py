"""Step: the DPO policy, trained with TRL's DPOTrainer from the SFT model on the reward model's preference pairs.

DPO (Rafailov et al. 2023) optimises the policy on chosen/rejected pairs directly, with the SFT model as the frozen
reference: no reward model, no sampling. Its implicit reward r(x, y) = β·(log π(y|x) − log π_ref(y|x)) is what TRL
reports as `rewards/*`; the held-out preference accuracy is the share of test pairs where r(chosen) > r(rejected),
measured by TRL's own evaluation on the same test pairs the reward model is scored on.
"""

from __future__ import annotations

import pandas as pd
import torch
from datasets import Dataset
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerBase
from trl import DPOConfig, DPOTrainer

from rlhf_assets.compute.memory_plan import ModelShape, Precision, finetune_plan
from rlhf_assets.eval.preference import wilson_interval
from rlhf_assets.eval.reporting import interval_text
from rlhf_assets.modeling.base import BaseModelRef, count_parameters, write_pointer
from rlhf_assets.modeling.complete_load import load_complete
from rlhf_assets.specs import DPOSpec
from rlhf_assets.step_contracts.base import Estimate, Markdown
from rlhf_assets.step_contracts.models import DPOReport, DPORequest
from rlhf_assets.steps.data_io import read_split
from rlhf_assets.steps.memory import check_memory_plan, this_gpu, training_ranks
from rlhf_assets.steps.progress import RuntimeProgressCallback, curve_markdown
from rlhf_assets.steps.runtime import StepRuntime, run_step
from rlhf_assets.steps.training import (
    CheckpointMarkerCallback,
    last_checkpoint,
    prepared,
    save_trained_model,
    trainer_arguments,
)


def preference_texts(frame: pd.DataFrame, tokenizer: PreTrainedTokenizerBase, spec: DPOSpec) -> Dataset:
    """Prompt/chosen/rejected texts cut as the reward model's pairs are: each response to `max_response_tokens`,
    the prompt from the left so the longer response still fits in `max_length` (TRL would cut the end instead)."""
    rows = []
    for prompt, chosen, rejected in zip(frame["prompt"], frame["chosen"], frame["rejected"], strict=True):
        responses = [tokenizer(r, add_special_tokens=False)["input_ids"][:spec.max_response_tokens]
                     for r in (chosen, rejected)]
        budget = max(spec.max_length - 1 - max(len(r) for r in responses), 0)  # 1: the EOS TRL appends
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        kept = prompt_ids[len(prompt_ids) - budget:] if budget else []
        rows.append({"prompt": tokenizer.decode(kept), "chosen": tokenizer.decode(responses[0]),
                     "rejected": tokenizer.decode(responses[1])})
    return Dataset.from_list(rows)


def main(runtime: StepRuntime) -> None:
    """Train the DPO policy from SFT, measure its held-out preference accuracy, write it as a policy artifact."""
    request = runtime.request(DPORequest)
    spec = request.dpo
    torch.manual_seed(spec.seed)
    sft = BaseModelRef.read(runtime.channel("sft_model"))
    plan = finetune_plan("dpo_policy", ModelShape.from_config(AutoConfig.from_pretrained(sft.weights)),
                         Precision.from_environment(), training_ranks(), batch_size=spec.batch_size,
                         max_length=spec.max_length, sequences_per_row=2, language_model_head=True,
                         frozen_reference=True, gpu=this_gpu())
    memory_plan = check_memory_plan(runtime, plan, request.force_memory_plan)
    tokenizer = sft.tokenizer()
    model = load_complete(AutoModelForCausalLM, sft.weights)
    preference = runtime.channel("preference_dataset")
    train = preference_texts(read_split(preference, "train", spec.max_train_rows), tokenizer, spec)
    held_out = preference_texts(read_split(preference, "test", spec.eval_rows), tokenizer, spec)
    runtime.log(f"DPO (β {spec.beta}, {spec.loss_type}) on {len(train)} preference pairs, {len(held_out)} held out; "
                f"{count_parameters(model):,} parameters, the SFT model as the frozen reference")
    progress = RuntimeProgressCallback(runtime)
    # Evaluation one pair per batch: TRL averages per-batch accuracies, which is the per-pair share only then.
    args = DPOConfig(**{**trainer_arguments(spec, runtime), "per_device_eval_batch_size": 1}, beta=spec.beta,
                     loss_type=[spec.loss_type], max_length=spec.max_length, disable_dropout=True)
    trainer = prepared(DPOTrainer(
        model=model, args=args, train_dataset=train, eval_dataset=held_out, processing_class=tokenizer,
        callbacks=[progress, CheckpointMarkerCallback()]), runtime)
    result = trainer.train(resume_from_checkpoint=last_checkpoint(runtime))
    evaluation = trainer.evaluate()
    save_trained_model(trainer, runtime)
    write_pointer(runtime.model_dir, "local", "dpo", count_parameters(model))

    accuracy = float(evaluation["eval_rewards/accuracies"])
    interval = wilson_interval(round(accuracy * len(held_out)), len(held_out))
    margin = float(evaluation["eval_rewards/margins"])
    runtime.log(f"DPO done: held-out preference accuracy {accuracy:.3f} on {len(held_out)} pairs, "
                f"implicit reward margin {margin:+.3f}")
    runtime.report(DPOReport(
        summary=Markdown(
            f"**DPO** (β {spec.beta}, loss {spec.loss_type}) from SFT on {len(train)} pairs: held-out preference "
            f"accuracy {interval_text(interval.estimate, interval.low, interval.high)} on {len(held_out)} test "
            f"pairs (share with r(chosen) > r(rejected), Wilson 95% CI; 0.5 is chance), implicit reward margin "
            f"{margin:+.3f}, seed {spec.seed}. The recipe trains no DPO policy."),
        eval_accuracy=Estimate(estimate=accuracy, ci_low=interval.low, ci_high=interval.high),
        eval_reward_margin=margin,
        eval_loss=float(evaluation["eval_loss"]),
        eval_pairs=len(held_out),
        train_loss=float(result.training_loss),
        train_rows=len(train),
        global_steps=int(trainer.state.global_step),
        parameter_count=count_parameters(model),
        beta=spec.beta,
        loss_type=spec.loss_type,
        memory_plan=memory_plan,
        reward_curves=Markdown(curve_markdown(
            progress.history, ("rewards/accuracies", "rewards/margins"), "Implicit reward: accuracy and margin")),
        loss_curve=Markdown(curve_markdown(progress.history, ("loss", "eval_loss"), "DPO loss")),
    ))


if __name__ == "__main__":
    run_step(main)
