"""Step: supervised fine-tuning of the base model on prompt + chosen, loss on response tokens only (TRL).

Inputs: channels `base_model` and `preference_dataset`. Output (`SM_MODEL_DIR`): safetensors weights + tokenizer.
Checkpoints go to the checkpoint dir every `save_steps`; a restarted run resumes from the newest one.
"""

from __future__ import annotations

import math

import pandas as pd
import torch
from datasets import Dataset
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerBase
from trl import SFTConfig, SFTTrainer

from rlhf_assets.compute.memory_plan import ModelShape, Precision, finetune_plan
from rlhf_assets.modeling.base import BaseModelRef, count_parameters, write_pointer
from rlhf_assets.modeling.complete_load import load_complete
from rlhf_assets.modeling.encoding import encode_prompt_response
from rlhf_assets.specs import TrainSpec
from rlhf_assets.step_contracts.base import Markdown
from rlhf_assets.step_contracts.models import SFTReport, SFTRequest
from rlhf_assets.steps.data_io import read_split
from rlhf_assets.steps.memory import check_memory_plan, this_gpu, training_ranks
from rlhf_assets.steps.progress import RuntimeProgressCallback, curve_markdown
from rlhf_assets.steps.runtime import StepRuntime, run_step
from rlhf_assets.steps.training import (
    CheckpointMarkerCallback,
    last_checkpoint,
    prepared,
    save_trained_model,
    tokens_per_second,
    trainer_arguments,
)


def encode_demonstrations(frame: pd.DataFrame, tokenizer: PreTrainedTokenizerBase, spec: TrainSpec) -> Dataset:
    """Pre-tokenized rows with a completion mask, so TRL computes the loss on the response alone."""
    rows = []
    for prompt, chosen in zip(frame["prompt"], frame["chosen"], strict=True):
        pair = encode_prompt_response(
            tokenizer, prompt, chosen, max_length=spec.max_length, max_response_tokens=spec.max_response_tokens
        )
        rows.append({"input_ids": pair.input_ids, "completion_mask": pair.completion_mask})
    return Dataset.from_list(rows)


def main(runtime: StepRuntime) -> None:
    """Fine-tune the base model on demonstrations and write weights + tokenizer to the model dir."""
    request = runtime.request(SFTRequest)
    spec = request.train
    torch.manual_seed(spec.seed)
    base = BaseModelRef.read(runtime.channel("base_model"))
    plan = finetune_plan("sft_model", ModelShape.from_config(AutoConfig.from_pretrained(base.weights)),
                         Precision.from_environment(), training_ranks(), batch_size=spec.batch_size,
                         max_length=spec.max_length, sequences_per_row=1, language_model_head=True, gpu=this_gpu())
    memory_plan = check_memory_plan(runtime, plan, request.force_memory_plan)
    tokenizer = base.tokenizer()
    model = load_complete(AutoModelForCausalLM, base.weights)
    preference = runtime.channel("preference_dataset")
    train = encode_demonstrations(read_split(preference, "train", spec.max_train_rows), tokenizer, spec)
    held_out = encode_demonstrations(read_split(preference, "test", spec.eval_rows), tokenizer, spec)
    runtime.log(f"SFT on {len(train)} demonstrations, {len(held_out)} held out; "
                f"{count_parameters(model):,} parameters")

    progress = RuntimeProgressCallback(runtime)
    args = SFTConfig(**trainer_arguments(spec, runtime), max_length=None, completion_only_loss=True, packing=False)
    trainer = prepared(SFTTrainer(
        model=model, args=args, train_dataset=train, eval_dataset=held_out,
        processing_class=tokenizer, callbacks=[progress, CheckpointMarkerCallback()],
    ), runtime)
    result = trainer.train(resume_from_checkpoint=last_checkpoint(runtime))
    evaluation = trainer.evaluate()
    save_trained_model(trainer, runtime)
    write_pointer(runtime.model_dir, "local", "sft", count_parameters(model))

    throughput = tokens_per_second(trainer.state.num_input_tokens_seen, result.metrics["train_runtime"])
    perplexity = math.exp(min(evaluation["eval_loss"], 50.0))
    runtime.log(f"SFT done: eval loss {evaluation['eval_loss']:.4f}, perplexity {perplexity:.1f}, "
                f"{throughput:.0f} tokens/s")
    runtime.report(SFTReport(
        train_loss=float(result.training_loss),
        eval_loss=float(evaluation["eval_loss"]),
        eval_perplexity=perplexity,
        tokens_per_second=throughput,
        train_tokens=int(trainer.state.num_input_tokens_seen),
        global_steps=int(trainer.state.global_step),
        parameter_count=count_parameters(model),
        train_rows=len(train),
        memory_plan=memory_plan,
        loss_curve=Markdown(curve_markdown(progress.history, ("loss", "eval_loss"), "SFT loss")),
    ))


if __name__ == "__main__":
    run_step(main)
