"""TRL's RLOO and GRPO as alternative policy optimisers behind the `ppo_policy` asset.

Same inputs, same reward (the reward model, with the recipe's delta against the chosen response), same eval;
TRL owns the loop. Their logged reward/KL/entropy are mapped onto the PPO history's names so the asset's
curves and warnings read the same whichever optimiser ran.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from rlhf_assets.modeling.complete_load import load_complete
from rlhf_assets.modeling.reward_model import RewardModelScorer
from rlhf_assets.specs import PPOSpec
from rlhf_assets.steps.progress import RuntimeProgressCallback
from rlhf_assets.steps.runtime import StepRuntime
from rlhf_assets.steps.training import CheckpointMarkerCallback, last_checkpoint, prepared

TRL_TO_PPO_NAMES = {"reward": "score_mean", "reward_std": "score_std", "kl": "kl_penalty", "entropy": "entropy",
                    "completions/mean_length": "response_length"}


def train_with_trl(
    runtime: StepRuntime,
    spec: PPOSpec,
    sft_weights: str,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    chosen: Sequence[str],
    scorer: RewardModelScorer,
) -> tuple[PreTrainedModel, list[dict[str, float]]]:
    """Train with TRL's `RLOOTrainer` or `GRPOTrainer`; returns the policy and its per-step history."""
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    cfg = spec.config
    chosen_by_prompt = dict(zip(prompts, chosen, strict=True))

    def reward_model(prompts: list[str], completions: list[str], **_: object) -> list[float]:
        scores = scorer.score(prompts, completions)
        if cfg.delta_reward:
            scores = scores - scorer.score(prompts, [chosen_by_prompt[p] for p in prompts])
        return scores.tolist()

    args_class, trainer_class = (GRPOConfig, GRPOTrainer) if spec.algorithm == "grpo" else (RLOOConfig, RLOOTrainer)
    args = args_class(
        output_dir=str(runtime.checkpoint_dir), per_device_train_batch_size=cfg.batch_size,
        num_generations=spec.num_generations, max_completion_length=cfg.max_new_tokens,
        learning_rate=cfg.learning_rate, max_steps=cfg.total_steps, beta=cfg.init_kl_coef,
        temperature=cfg.temperature, top_p=cfg.top_p, logging_steps=1, save_steps=cfg.checkpoint_interval,
        save_total_limit=2, report_to=[], seed=cfg.seed, use_cpu=not torch.cuda.is_available(), disable_tqdm=True,
    )
    progress = RuntimeProgressCallback(runtime)
    trainer = prepared(trainer_class(
        model=load_complete(AutoModelForCausalLM, sft_weights), reward_funcs=reward_model, args=args,
        train_dataset=Dataset.from_dict({"prompt": list(prompts)}), processing_class=tokenizer,
        callbacks=[progress, CheckpointMarkerCallback()],
    ), runtime)
    trainer.train(resume_from_checkpoint=last_checkpoint(runtime))
    history = [
        {"step": h["step"], **{ours: h[theirs] for theirs, ours in TRL_TO_PPO_NAMES.items() if theirs in h}}
        for h in progress.history if "reward" in h
    ]
    return trainer.model, history
