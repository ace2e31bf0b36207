"""Step: PPO of the SFT policy against the reward model, KL-held to the SFT model (our trlx-faithful PPO,
`train_ours`), or TRL's RLOO / GRPO with the same reward when `algorithm` says so (`train_trl`).

Inputs: channels `sft_model`, `reward_model`, `preference_dataset` (training prompts + chosen responses for the
delta reward) and `eval_prompts`. Output: the policy (safetensors + tokenizer + value head). At the end the
SFT and PPO policies answer the eval prompts with the same seed and settings; the reward model scores both and
a paired bootstrap CI of the difference is reported, with the KL of the PPO responses to the SFT model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import save_file
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from rlhf_assets.compute.memory_plan import MemoryPlan, ModelShape, Precision, ppo_plan
from rlhf_assets.eval.bootstrap import bootstrap_mean, paired_bootstrap_mean_difference
from rlhf_assets.eval.length import log_length, regression_adjusted, word_count
from rlhf_assets.eval.reporting import interval_text
from rlhf_assets.layouts import EVAL_PROMPTS
from rlhf_assets.modeling.base import BaseModelRef, count_parameters, write_pointer
from rlhf_assets.modeling.complete_load import load_complete
from rlhf_assets.modeling.encoding import encode_prompts
from rlhf_assets.modeling.reward_model import RewardModelScorer
from rlhf_assets.ppo.config import PPOConfig
from rlhf_assets.ppo.rewards import DeltaReward
from rlhf_assets.ppo.sampling import sequence_kl
from rlhf_assets.ppo.snapshots import SNAPSHOTS_DIR, copy_snapshots
from rlhf_assets.ppo.trainer import PPOTrainer
from rlhf_assets.ppo.value_head import CausalLMWithValueHead, add_lora, freeze_bottom_layers
from rlhf_assets.specs import GenerationSpec, PPOSpec
from rlhf_assets.step_contracts.base import ControlledEstimate, Estimate, Markdown
from rlhf_assets.step_contracts.models import PolicyReport, PolicyRequest
from rlhf_assets.steps.data_io import read_split
from rlhf_assets.steps.generation import generate_texts
from rlhf_assets.steps.memory import check_memory_plan, this_gpu, training_ranks
from rlhf_assets.steps.progress import curve_markdown
from rlhf_assets.steps.reward import load_reward_scorer, reward_gpu
from rlhf_assets.steps.runtime import StepInputError, StepRuntime, run_step
from rlhf_assets.steps.training import launch_description
from rlhf_assets.steps.trl_policy import train_with_trl


def evaluate(
    runtime: StepRuntime,
    spec: PPOSpec,
    tokenizer: PreTrainedTokenizerBase,
    policy: PreTrainedModel,
    reference: PreTrainedModel,
    scorer: RewardModelScorer,
    eval_frame: pd.DataFrame,
) -> PolicyEvaluation:
    """SFT vs the trained policy on the held-out prompts: sampled by `generate_texts` with the same seed and the
    rollout settings for both, scored by the reward model; paired CI of the gain, KL to SFT on the policy's tokens."""
    cfg = spec.config
    generation = GenerationSpec(**cfg.sampling(max_new_tokens=spec.eval_max_new_tokens).model_dump(),
                                prompt_tokens=cfg.prompt_budget, batch_size=cfg.chunk_size, seed=cfg.seed)
    prompts = list(eval_frame["prompt"])
    generated = {name: generate_texts(model, tokenizer, prompts, generation,
                                      log=lambda line, name=name: runtime.log(f"eval {name}: {line}"))
                 for name, model in (("sft", reference), ("ppo", policy))}
    # The reward model scores the decoded response as sampled (leading space kept, as in the rollouts), not the
    # stripped text `generate_texts` returns for people to read.
    scores = {name: scorer.score(prompts, tokenizer.batch_decode([samples[0] for samples in run.response_ids],
                                                                 skip_special_tokens=True)).tolist()
              for name, run in generated.items()}
    interval = paired_bootstrap_mean_difference(scores["sft"], scores["ppo"], seed=cfg.seed)
    texts = {name: [samples[0] for samples in run.texts] for name, run in generated.items()}
    controlled = regression_adjusted(
        [b - a for a, b in zip(scores["sft"], scores["ppo"], strict=True)],
        log_length(texts["ppo"]) - log_length(texts["sft"]),
        [word_count(b) - word_count(a) for a, b in zip(texts["sft"], texts["ppo"], strict=True)], seed=cfg.seed)
    kl = sequence_kl(policy, reference, generated["ppo"].prompt_ids,
                     [samples[0] for samples in generated["ppo"].response_ids], tokenizer.pad_token_id)
    kl_interval = bootstrap_mean(kl.tolist(), seed=cfg.seed)
    equal_length = (controlled.controlled.estimate, controlled.controlled.low, controlled.controlled.high)
    runtime.log(f"eval on {len(prompts)} prompts: RM score SFT {sum(scores['sft']) / len(prompts):+.3f}, "
                f"{spec.algorithm} policy {sum(scores['ppo']) / len(prompts):+.3f}, "
                f"difference {interval.estimate:+.3f} "
                f"[{interval.low:+.3f}, {interval.high:+.3f}]; KL to SFT {float(kl.mean()):.3f}")
    return PolicyEvaluation(
        prompts=len(prompts),
        sft_reward_mean=sum(scores["sft"]) / len(prompts),
        policy_reward_mean=sum(scores["ppo"]) / len(prompts),
        reward_gain=ControlledEstimate.of_result(interval, controlled),
        kl_to_sft=Estimate.of(kl_interval),
        summary=Markdown(
            f"**{spec.algorithm.upper()} − SFT reward-model score** on {len(prompts)} held-out prompts: "
            f"{interval_text(interval.estimate, interval.low, interval.high, signed=True)} (95% paired bootstrap "
            f"over prompts, seed {cfg.seed}), at equal length {interval_text(*equal_length, signed=True)}; KL to "
            f"SFT {interval_text(kl_interval.estimate, kl_interval.low, kl_interval.high)} nats per response "
            f"(bound {spec.kl_bound}). The recipe reports no reward gain; its figures are the human and toxicity "
            "ones." + kl_control_note(spec)),
    )


@dataclass(frozen=True)
class PolicyEvaluation:
    """The trained policy against SFT on the held-out prompts, by the reward model it optimised."""

    prompts: int
    sft_reward_mean: float
    policy_reward_mean: float
    reward_gain: ControlledEstimate
    kl_to_sft: Estimate
    summary: Markdown


def kl_control_note(spec: PPOSpec) -> str:
    """TRL's RLOO and GRPO hold β fixed at `init_kl_coef`: a preset's adaptive-KL target and horizon are ours only,
    so the report says so instead of letting them look applied."""
    cfg = spec.config
    if spec.algorithm == "ppo" or cfg.target is None:
        return ""
    return (f" KL control: fixed β = {cfg.init_kl_coef} (TRL {spec.algorithm.upper()} has no adaptive controller; "
            f"the preset's target {cfg.target} and horizon {cfg.horizon} do not apply).")


def load_frozen(weights: str, dtype: torch.dtype | None = None) -> PreTrainedModel:
    """The SFT model as a frozen reference (training with full weights; always for the final comparison)."""
    return load_complete(AutoModelForCausalLM, weights, dtype=dtype).eval().requires_grad_(False)


def release_training_state(trainer: PPOTrainer) -> None:
    """Drop optimizer states, gradients, the hydra branch and the engine before the final comparison loads a
    whole SFT copy on this GPU (the memory plan's `evaluation` phase)."""
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.optimizer = trainer.scheduler = trainer.branch = trainer.reference = trainer.policy = None
    trainer.accelerator.free_memory()


def warnings_for(history: list[dict[str, float]], config: PPOConfig, kl_bound: float) -> list[str]:
    """Reward-hacking signals worth a human look: KL running away, entropy collapsing."""
    found = []
    final = {"kl_penalty": 0.0, "entropy": 0.0, **history[-1]}
    first_entropy = history[0].get("entropy", 0.0)
    if final["kl_penalty"] > kl_bound:
        found.append(f"KL to SFT exploded: {final['kl_penalty']:.2f} > bound {kl_bound}")
    if config.target and final["kl_penalty"] > 2 * config.target:
        found.append(f"KL {final['kl_penalty']:.2f} is over twice the target {config.target}")
    if first_entropy and final["entropy"] < 0.25 * first_entropy:
        found.append(f"entropy collapsed: {first_entropy:.2f} -> {final['entropy']:.2f}")
    return found


def planned_memory(policy_weights: str, reward_dir: Path, spec: PPOSpec) -> MemoryPlan:
    """Our PPO's per-rank memory plan, from the two models' configs (nothing loaded yet)."""
    on_gpu = torch.cuda.is_available()
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    own_gpu = on_gpu and reward_gpu(torch.cuda.device_count(), local_ranks, 0) != 0
    return ppo_plan(ModelShape.from_config(AutoConfig.from_pretrained(policy_weights)), spec.config,
                    Precision.from_environment(), training_ranks(),
                    ModelShape.from_config(AutoConfig.from_pretrained(reward_dir), classifier=True),
                    reward_batch_size=spec.reward_batch_size, reward_on_own_gpu=own_gpu, gpu=this_gpu())


@dataclass
class Trained:
    """What either optimiser hands to the evaluation and the artifact (on the main process)."""

    model: PreTrainedModel
    history: list[dict[str, float]]
    final_kl_coef: float
    resumed_from_step: int | None = None  # ours only: where a resumed run picked up (-1: a fresh run)
    value_head: torch.nn.Module | None = None
    reference: PreTrainedModel | None = None  # our PPO's full-copy reference, reused by the evaluation


def train_ours(runtime: StepRuntime, spec: PPOSpec, sft: BaseModelRef, tokenizer: PreTrainedTokenizerBase,
               prompts: list[list[int]], train: pd.DataFrame, scorer: RewardModelScorer | None) -> Trained | None:
    """Our PPO (trlx's algorithm): value head on the SFT model, delta reward, adaptive KL; None off the main rank."""
    cfg = spec.config
    # The value head and LoRA adapters start from random weights: seeded here, not by whatever drew from the
    # global RNG before (two fresh runs trained different value heads from identical rollouts without this).
    torch.manual_seed(cfg.seed)
    base = load_complete(AutoModelForCausalLM, sft.weights)
    if cfg.lora_rank:
        base = add_lora(base, cfg.lora_rank, cfg.lora_alpha)
        trainable = sum(p.numel() for p in base.parameters() if p.requires_grad)
    else:
        trainable = freeze_bottom_layers(base, cfg.num_layers_unfrozen)
    runtime.log(f"PPO on {len(prompts)} prompts: {count_parameters(base):,} parameters, {trainable:,} "
                f"trainable, {cfg.total_steps} steps of {cfg.batch_size}")
    reward_fn = None if scorer is None else DeltaReward(
        scorer, list(train["prompt"]), list(train["chosen"]) if cfg.delta_reward else None)
    reference = load_frozen(sft.weights) if cfg.reference_kind == "full_copy" else None
    trainer = PPOTrainer(cfg, CausalLMWithValueHead(base), reference, tokenizer, prompts, reward_fn,
                         runtime.checkpoint_dir, runtime.log)
    runtime.log(f"launch: {launch_description(trainer.accelerator)}")
    history = trainer.train().steps
    trainer.accelerator.wait_for_everyone()
    if not runtime.is_main_process:
        return None
    policy = trainer.accelerator.unwrap_model(trainer.policy).eval()
    trained = policy.base.merge_and_unload() if cfg.lora_rank else policy.base
    final_kl_coef = trainer.kl_controller.value
    resumed_from = -1 if trainer.history.resumed_from is None else trainer.history.resumed_from
    value_head = policy.v_head
    release_training_state(trainer)
    return Trained(trained, history, final_kl_coef, resumed_from, value_head, reference)


def train_trl(runtime: StepRuntime, spec: PPOSpec, sft: BaseModelRef, tokenizer: PreTrainedTokenizerBase,
              prompts: list[list[int]], train: pd.DataFrame, scorer: RewardModelScorer) -> Trained | None:
    """TRL's RLOO or GRPO with the same reward and prompts; None off the main rank."""
    runtime.log(f"{spec.algorithm.upper()} (TRL) on {len(prompts)} prompts, {spec.config.total_steps} steps."
                + kl_control_note(spec))
    trained, history = train_with_trl(runtime, spec, sft.weights, tokenizer, tokenizer.batch_decode(prompts),
                                      list(train["chosen"]), scorer)
    if not runtime.is_main_process:
        return None
    return Trained(trained.eval(), history, spec.config.init_kl_coef)


def training_prompts(tokenizer: PreTrainedTokenizerBase, train: pd.DataFrame, cfg: PPOConfig) -> list[list[int]]:
    """The training prompts as token ids within the prompt budget: cut from the left, or refused when the config
    says prompts must not be cut."""
    prompts = encode_prompts(tokenizer, list(train["prompt"]), cfg.prompt_budget if cfg.truncate_prompts else None)
    too_long = next((i for i, ids in enumerate(prompts) if len(ids) > cfg.prompt_budget), None)
    if too_long is not None:
        raise StepInputError(
            f"ppo.config.truncate_prompts is false and training prompt {too_long} has {len(prompts[too_long])} "
            f"tokens, over the prompt budget of {cfg.prompt_budget} (seq_length − max_new_tokens)")
    return prompts


def main(runtime: StepRuntime) -> None:
    """Train the policy (ours or TRL's), evaluate it against SFT and write it to the model dir."""
    request = runtime.request(PolicyRequest)
    spec = request.ppo
    cfg = spec.config
    sft = BaseModelRef.read(runtime.channel("sft_model"))
    tokenizer = sft.tokenizer()
    tokenizer.padding_side = "left"
    train = read_split(runtime.channel("preference_dataset"), "train").drop_duplicates("prompt")
    eval_frame = runtime.read_table("eval_prompts", EVAL_PROMPTS)
    prompts = training_prompts(tokenizer, train, cfg)
    memory_plan = check_memory_plan(runtime, planned_memory(sft.weights, runtime.channel("reward_model"), spec),
                                    request.force_memory_plan) if spec.algorithm == "ppo" else None
    # Our PPO scores in the main process only; TRL's trainers call the reward function on every rank.
    needs_scorer = runtime.is_main_process or spec.algorithm != "ppo"
    scorer = load_reward_scorer(
        runtime.channel("reward_model"), max_length=cfg.seq_length, max_response_tokens=cfg.max_new_tokens,
        batch_size=spec.reward_batch_size) if needs_scorer else None
    train_policy = train_ours if spec.algorithm == "ppo" else train_trl
    result = train_policy(runtime, spec, sft, tokenizer, prompts, train, scorer)
    if result is None:  # another rank of a multi-process run: the main process evaluates and saves
        return
    assert scorer is not None
    trained, history = result.model, result.history
    reference = result.reference
    if reference is None:
        weights = next(trained.parameters())
        reference = load_frozen(sft.weights, weights.dtype).to(weights.device)
    results = evaluate(runtime, spec, tokenizer, trained, reference, scorer, eval_frame)
    trained.save_pretrained(runtime.model_dir, safe_serialization=True)
    tokenizer.save_pretrained(runtime.model_dir)
    snapshots = copy_snapshots(runtime.checkpoint_dir / SNAPSHOTS_DIR, runtime.model_dir / SNAPSHOTS_DIR)
    if result.value_head is not None:
        save_file({k: v.contiguous() for k, v in result.value_head.state_dict().items()},
                  str(runtime.model_dir / "value_head.safetensors"))
    write_pointer(runtime.model_dir, "local", spec.algorithm, count_parameters(trained))
    alerts = warnings_for(history, cfg, spec.kl_bound)
    for alert in alerts:
        runtime.log(f"WARNING: {alert}")
    runtime.report(PolicyReport(
        algorithm=spec.algorithm,
        eval_prompts=results.prompts,
        eval_sft_reward_mean=results.sft_reward_mean,
        eval_policy_reward_mean=results.policy_reward_mean,
        eval_reward_gain=results.reward_gain,
        eval_kl_to_sft=results.kl_to_sft,
        eval_kl_bound=spec.kl_bound,
        final_kl_coef=result.final_kl_coef,
        resumed_from_step=result.resumed_from_step,
        snapshots=snapshots,
        steps=int(history[-1]["step"]),
        final_rollout_score=history[-1]["score_mean"],
        final_rollout_kl=history[-1].get("kl_penalty", 0.0),
        memory_plan=memory_plan,
        summary=results.summary,
        warnings=Markdown("\n".join(f"- ⚠ {a}" for a in alerts) or "none"),
        reward_curve=Markdown(curve_markdown(history, ("score_mean",), "Rollout reward (RM score)")),
        kl_curve=Markdown(curve_markdown(history, ("kl_penalty", "kl_nonnegative"), "KL to SFT")),
    ))


if __name__ == "__main__":
    run_step(main)
