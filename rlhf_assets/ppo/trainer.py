"""The PPO loop: collect `num_rollouts` in `chunk_size` chunks, then `ppo_epochs` of minibatch updates.

One optimizer step consumes `batch_size` rollouts; `total_steps` counts optimizer steps, as in trlx.
Checkpoints are taken between phases (after an update phase), so a resumed run re-collects the next phase's
rollouts from the restored RNG state and continues to exactly `total_steps`.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs, set_seed
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlhf_assets.modeling.restricted_load import restrict_deepspeed_loading
from rlhf_assets.ppo.advantages import gae, masked_mean, whiten
from rlhf_assets.ppo.checkpoint import (
    checkpoint_dir,
    commit_host_part,
    latest_checkpoint,
    read_state,
    staging_dir,
    write_state,
)
from rlhf_assets.ppo.config import PPOConfig
from rlhf_assets.ppo.distributed import (
    broadcast_from_main,
    gather_lists,
    global_masked_moments,
    global_mean,
    global_sum,
)
from rlhf_assets.ppo.hydra import FrozenBranch
from rlhf_assets.ppo.kl_controller import make_kl_controller
from rlhf_assets.ppo.losses import policy_loss, value_loss
from rlhf_assets.ppo.rewards import RewardScaler, per_token_rewards
from rlhf_assets.ppo.rollout import Experience
from rlhf_assets.ppo.sampling import (
    join_query_response,
    left_pad,
    response_logits,
    response_logprobs,
    right_pad,
    sample_responses,
)
from rlhf_assets.ppo.snapshots import SNAPSHOTS_DIR, save_snapshot, snapshot_steps
from rlhf_assets.ppo.value_head import CausalLMWithValueHead, transformer_layers

RewardFn = Callable[[list[int], list[str]], torch.Tensor]
"""(prompt indices, response texts) -> (B,) scores. Called in the main process only, on every rank's samples."""


@dataclass
class RolloutStats:
    score_mean: float
    score_std: float
    kl_penalty: float  # mean over samples of Σ_t (log π − log π_ref): the estimator in the penalty
    kl_nonnegative: float  # mean over samples of Σ_t k3, k3 = r − 1 − log r with r = π_ref/π (≥ 0)
    entropy: float
    response_length: float
    tokens_per_second: float


@dataclass
class TrainingHistory:
    steps: list[dict[str, float]] = field(default_factory=list)
    resumed_from: int | None = None


def default_accelerator() -> Accelerator:
    """The launch's accelerator: DeepSpeed when `accelerate launch` configured it (the recipe's ZeRO-2, on CPUs too,
    where DeepSpeed's CPU accelerator runs it over gloo), else DDP, or one process, on whatever device there is."""
    if torch.cuda.is_available():
        return Accelerator()
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        return Accelerator(kwargs_handlers=[InitProcessGroupKwargs(backend="gloo")])
    return Accelerator(cpu=True)


class PPOTrainer:
    """PPO against a reward function, KL-held to a frozen reference model.

    The reference is what `config.reference_kind` says, as in trlx: with LoRA the policy with its adapters
    disabled; with only the top layers training, a hydra branch (frozen copies of those layers, fed the policy
    trunk's hidden state); otherwise the full frozen copy passed as `reference`. Under `accelerate launch` each
    rank collects its own share of the rollouts; `reward_fn` is only needed (and only called) in the main
    process.
    """

    def __init__(
        self,
        config: PPOConfig,
        policy: CausalLMWithValueHead,
        reference: PreTrainedModel | None,
        tokenizer: PreTrainedTokenizerBase,
        prompts: Sequence[list[int]],
        reward_fn: RewardFn | None,
        checkpoint_dir: Path,
        log: Callable[[str], None] = print,
        accelerator: Accelerator | None = None,
    ) -> None:
        self.config, self.tokenizer, self.prompts, self.reward_fn = config, tokenizer, list(prompts), reward_fn
        self.checkpoint_dir, self.log = checkpoint_dir, log
        self.accelerator = accelerator or default_accelerator()
        if reward_fn is None and self.accelerator.is_main_process:
            raise ValueError("the main process needs a reward function")
        deepspeed = self.accelerator.state.deepspeed_plugin
        if deepspeed is not None:  # no dataloader is prepared, so DeepSpeed is told the per-GPU batch directly
            deepspeed.deepspeed_config["train_micro_batch_size_per_gpu"] = config.batch_size
        kind = config.reference_kind
        if (reference is None) != (kind != "full_copy"):
            raise ValueError(f"reference kind {kind!r} {'needs' if reference is None else 'takes no'} reference model")
        self.branch = FrozenBranch(policy.base, config.num_layers_unfrozen) if kind == "hydra" else None
        if self.branch is not None:
            self._check_hydra(policy)
        trainable = [p for p in policy.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, betas=config.betas, eps=config.eps,
                                      weight_decay=config.weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.total_steps,
                                                               eta_min=config.lr_min)
        self.policy, self.optimizer, self.scheduler = self.accelerator.prepare(policy, optimizer, scheduler)
        # The reference is held in the trunk's dtype (bf16 under DeepSpeed), as the memory plan counts it.
        trunk_dtype = next(self.accelerator.unwrap_model(self.policy).base.parameters()).dtype
        self.reference = reference.to(self.accelerator.device, dtype=trunk_dtype).eval().requires_grad_(False) \
            if reference else None
        if self.branch is not None:
            self.branch.to(device=self.accelerator.device, dtype=trunk_dtype)
        self.kl_controller = make_kl_controller(config.init_kl_coef, config.target, config.horizon)
        self.reward_scaler = RewardScaler(config.scale_reward, config.cliprange_reward, config.ref_std)
        self.step = 0
        self.snapshot_at = set(snapshot_steps(config.total_steps, config.curve_points))
        self.prompt_order: list[int] = []
        self.prompt_cursor = 0
        self.prompt_epoch = 0
        self.history = TrainingHistory()

    def _check_hydra(self, policy: CausalLMWithValueHead) -> None:
        """The hydra branch is only the reference if nothing below the branch point trains (and every rank
        holds whole weights to copy it from)."""
        below = [name for index, block in enumerate(transformer_layers(policy.base))
                 if index < self.branch.branch_index for name, p in block.named_parameters() if p.requires_grad]
        below += [name for name, p in policy.base.get_input_embeddings().named_parameters() if p.requires_grad]
        if below:
            raise ValueError(f"hydra reference needs everything below the top {self.config.num_layers_unfrozen} "
                             f"blocks frozen, but {below[0]} trains (call freeze_bottom_layers, or set "
                             "hydra_reference: false)")
        deepspeed = self.accelerator.state.deepspeed_plugin
        if deepspeed is not None and deepspeed.zero_stage == 3:
            raise ValueError("hydra reference under ZeRO-3 would copy partitioned weights: use ZeRO-2 or "
                             "hydra_reference: false")

    # ---- state -------------------------------------------------------------------------------------------
    def _snapshot(self, rollout_kl: float, rollout_score: float) -> None:
        """Keep the trainable weights at this step for the over-optimisation curve (the main process writes them
        beside the checkpoints, which survive a restart; ZeRO-2 leaves every rank the whole weights)."""
        if self.accelerator.is_main_process:
            cfg = self.config
            base = self.accelerator.unwrap_model(self.policy).base
            lora = {"rank": cfg.lora_rank, "alpha": cfg.lora_alpha} if cfg.lora_rank else None
            save_snapshot(self.checkpoint_dir / SNAPSHOTS_DIR, self.step, base, lora,
                          {"rollout_kl": rollout_kl, "rollout_score": rollout_score})
            self.log(f"snapshot at step {self.step} (rollout KL {rollout_kl:.3f}) for the over-optimisation curve")
        self.accelerator.wait_for_everyone()

    def _save(self) -> None:
        accelerator = self.accelerator
        staging = staging_dir(self.checkpoint_dir, self.step)
        if accelerator.is_local_main_process:
            shutil.rmtree(staging, ignore_errors=True)
            shutil.rmtree(checkpoint_dir(self.checkpoint_dir, self.step), ignore_errors=True)  # a stale partial one
            staging.mkdir(parents=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(staging), safe_serialization=False)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            write_state(staging, self.step, {
                "kl_controller": self.kl_controller.state_dict(), "reward_scaler": self.reward_scaler.state_dict(),
                "prompt_order": self.prompt_order, "prompt_cursor": self.prompt_cursor,
                "prompt_epoch": self.prompt_epoch, "history": self.history.steps})
        if accelerator.is_local_main_process:
            path = commit_host_part(self.checkpoint_dir, staging, self.step)
            self.log(f"checkpoint saved at step {self.step}: {path.name}")
        accelerator.wait_for_everyone()

    def _resume(self) -> None:
        found = latest_checkpoint(self.checkpoint_dir, self.log)
        if found is None:
            set_seed(self.config.seed, device_specific=True)
            return
        if self.accelerator.state.deepspeed_plugin is not None:  # DeepSpeed unpickles its files in full otherwise
            restrict_deepspeed_loading()
        self.accelerator.load_state(str(found))
        state = read_state(found)
        self.kl_controller.load_state_dict(state["kl_controller"])
        self.reward_scaler.load_state_dict(  # checkpoints written before the scaler kept only the moments
            state.get("reward_scaler") or {"moments": state["moments"], "ref_std": self.config.ref_std})
        self.prompt_order, self.prompt_cursor = state["prompt_order"], state["prompt_cursor"]
        self.prompt_epoch = state["prompt_epoch"]
        self.step = state["step"]
        self.history = TrainingHistory(steps=state["history"], resumed_from=self.step)
        self.log(f"resumed from {found.name}: step {self.step}, KL coefficient {self.kl_controller.value:.4f}")

    # ---- rollouts ----------------------------------------------------------------------------------------
    def _next_prompts(self, count: int) -> list[int]:
        """This rank's `count` prompts: all ranks walk one seeded shuffle and take consecutive slices of it."""
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        chosen: list[int] = []
        while len(chosen) < count * world:
            if self.prompt_cursor >= len(self.prompt_order):
                shuffle = random.Random(self.config.seed * 1_000_003 + self.prompt_epoch)
                self.prompt_order = shuffle.sample(range(len(self.prompts)), len(self.prompts))
                self.prompt_cursor, self.prompt_epoch = 0, self.prompt_epoch + 1
            chosen.append(self.prompt_order[self.prompt_cursor])
            self.prompt_cursor += 1
        return chosen[rank * count: (rank + 1) * count]

    def _score(self, indices: list[int], texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(this rank's scores, every rank's scores): the RM runs in the main process over every rank's samples."""
        accelerator = self.accelerator
        all_indices, all_texts = gather_lists(accelerator, indices), gather_lists(accelerator, texts)
        scores = None
        if accelerator.is_main_process:
            assert self.reward_fn is not None
            scores = self.reward_fn(all_indices, all_texts).float().tolist()
        scores = broadcast_from_main(accelerator, scores)
        start = accelerator.process_index * len(indices)
        return torch.tensor(scores[start: start + len(indices)]), torch.tensor(scores)

    @torch.no_grad()
    def _forward_old(self, batch: Experience) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logprobs, ref_logprobs, values, entropy) of the sampled responses under π_old, π_ref, V_old."""
        device = self.accelerator.device
        ids, mask, positions = (t.to(device) for t in join_query_response(
            batch.query_ids, batch.query_mask, batch.response_ids, batch.response_mask))
        r_width = batch.response_ids.shape[1]
        if self.branch is not None:  # one trunk forward: the branch starts from the policy's hidden state
            with self.branch.capture(self.accelerator.unwrap_model(self.policy).base) as branch_input:
                logits, values = self.policy(ids, mask, positions, r_width)
            with self.accelerator.autocast():  # the same precision as the policy's own top blocks
                ref_logits = self.branch(branch_input, r_width)
        else:
            logits, values = self.policy(ids, mask, positions, r_width)
            with self.accelerator.autocast():
                ref_logits = self._reference_logits(ids, mask, positions, r_width)
        logprobs = response_logprobs(logits, ids, r_width)
        step_logits = logits.float()
        entropy = -(step_logits.softmax(-1) * step_logits.log_softmax(-1)).sum(-1)
        ref_logprobs = response_logprobs(ref_logits, ids, r_width)
        return logprobs.cpu(), ref_logprobs.cpu(), values.float().cpu(), entropy.cpu()

    def _reference_logits(
        self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, r_width: int
    ) -> torch.Tensor:
        if self.reference is not None:
            return response_logits(self.reference, ids, mask, positions, r_width)[0]
        trunk = self.accelerator.unwrap_model(self.policy).base
        with trunk.disable_adapter():
            return response_logits(trunk, ids, mask, positions, r_width)[0]

    def collect_rollouts(self) -> tuple[Experience, RolloutStats]:
        """Sample `num_rollouts` responses in chunks and turn RM scores into per-token rewards.

        Scores are clipped and scaled chunk by chunk, every rank's chunk feeding the running moments, as trlx's
        `make_experience` does; the KL penalty uses the β of the phase's start.
        """
        cfg = self.config
        chunks, scaled, all_scores, entropies = [], [], [], []
        generated, started = 0, time.perf_counter()
        model = self.accelerator.unwrap_model(self.policy).base
        model.eval()
        for start in range(0, cfg.num_rollouts, cfg.chunk_size):
            indices = self._next_prompts(min(cfg.chunk_size, cfg.num_rollouts - start))
            queries = [self.prompts[i] for i in indices]
            responses = sample_responses(
                model, self.tokenizer, queries, max_new_tokens=cfg.max_new_tokens, top_k=cfg.top_k,
                top_p=cfg.top_p, temperature=cfg.temperature, stop_sequences=cfg.stop_sequences)
            generated += sum(len(r) for r in responses)
            texts = self.tokenizer.batch_decode(responses, skip_special_tokens=True)
            scores, everyone = self._score(indices, texts)
            all_scores.append(everyone)
            scaled.append(self.reward_scaler(scores, everyone))
            query_ids, query_mask = left_pad(queries, self.tokenizer.pad_token_id)
            response_ids, response_mask = right_pad(responses, self.tokenizer.pad_token_id)
            empty = torch.zeros_like(response_ids, dtype=torch.float)
            chunk = Experience(query_ids, query_mask, response_ids, response_mask, empty, empty, empty, empty,
                               scores)
            chunk.logprobs, chunk.ref_logprobs, chunk.values, entropy = self._forward_old(chunk)
            entropies.append(masked_mean(entropy, response_mask.float()))
            chunks.append(chunk)
        store = Experience.concatenate(chunks, self.tokenizer.pad_token_id)
        mask = store.response_mask.float()
        all_scores = torch.cat(all_scores)
        store.rewards, kl = per_token_rewards(torch.cat(scaled), store.logprobs, store.ref_logprobs, mask,
                                              self.kl_controller.value)
        log_ratio = (store.ref_logprobs - store.logprobs) * mask
        k3 = (torch.exp(log_ratio) - 1 - log_ratio) * mask
        acc = self.accelerator
        stats = RolloutStats(
            score_mean=float(all_scores.mean()), score_std=float(all_scores.std()),
            kl_penalty=global_mean(acc, float(kl.sum(1).mean())),
            kl_nonnegative=global_mean(acc, float(k3.sum(1).mean())),
            entropy=global_mean(acc, float(torch.stack(entropies).mean())),
            response_length=global_mean(acc, float(mask.sum(1).mean())),
            tokens_per_second=global_sum(acc, generated) / max(time.perf_counter() - started, 1e-9),
        )
        return store, stats

    # ---- updates -----------------------------------------------------------------------------------------
    def _update(self, batch: Experience, advantages: torch.Tensor, returns: torch.Tensor) -> dict[str, float]:
        """One optimizer step on a minibatch, its response columns cut to its own longest response.

        With `advantage_whitening: minibatch` the advantages are whitened here, as trlx's `loss()` does: over
        every position of the minibatch's padded response tensor (padding counts, its advantage being 0), with
        statistics over all ranks.
        """
        cfg, device = self.config, self.accelerator.device
        batch = batch.trimmed()
        width = batch.response_ids.shape[1]
        advantages, returns = advantages[:, :width], returns[:, :width]
        if cfg.advantage_whitening == "minibatch":
            everywhere = torch.ones_like(advantages)
            advantages = whiten(advantages, everywhere,
                                moments=global_masked_moments(self.accelerator, advantages, everywhere))
        ids, mask, positions = (t.to(device) for t in join_query_response(
            batch.query_ids, batch.query_mask, batch.response_ids, batch.response_mask))
        r_width = batch.response_ids.shape[1]
        response_mask = batch.response_mask.float().to(device)
        logits, values = self.policy(ids, mask, positions, r_width)
        logprobs = response_logprobs(logits, ids, r_width)
        values = values.float()
        pg = policy_loss(logprobs, batch.logprobs.to(device), advantages.to(device), response_mask, cfg.cliprange)
        vf = value_loss(values, batch.values.to(device), returns.to(device), response_mask, cfg.cliprange_value)
        loss = pg.loss + cfg.vf_coef * vf.loss
        self.accelerator.backward(loss)
        if cfg.max_grad_norm:
            self.accelerator.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad()
        return {"loss": loss.item(), "policy_loss": pg.loss.item(), "value_loss": vf.loss.item(),
                "policy_clipfrac": pg.clip_fraction, "value_clipfrac": vf.clip_fraction, "approx_kl": pg.approx_kl}

    def train(self) -> TrainingHistory:
        """Run (or resume) until `total_steps` optimizer steps; returns per-step statistics."""
        cfg = self.config
        self._resume()
        steps_per_phase = cfg.ppo_epochs * math.ceil(cfg.num_rollouts / cfg.batch_size)
        last_saved = self.step
        while self.step < cfg.total_steps:
            self.policy.eval()
            store, rollout = self.collect_rollouts()
            mask = store.response_mask.float()
            advantages, returns = gae(store.values, store.rewards, mask, cfg.gamma, cfg.lam)
            if cfg.advantage_whitening == "phase":
                advantages = whiten(advantages, mask, moments=global_masked_moments(self.accelerator, advantages,
                                                                                    mask))
            self.policy.train()
            started = time.perf_counter()
            for _ in range(cfg.ppo_epochs):
                for index in torch.randperm(len(store)).split(cfg.batch_size):
                    if self.step >= cfg.total_steps:
                        break
                    update = self._update(store.select(index), advantages[index], returns[index])
                    self.step += 1
                    record = {"step": float(self.step), **vars(rollout), **update,
                              "kl_coef": self.kl_controller.value, "learning_rate": self.scheduler.get_last_lr()[0]}
                    self.history.steps.append(record)
                    if self.step in self.snapshot_at:
                        self._snapshot(rollout.kl_penalty, rollout.score_mean)
                    self.log(
                        f"step {self.step}/{cfg.total_steps} score {rollout.score_mean:+.3f}±{rollout.score_std:.3f} "
                        f"KL {rollout.kl_penalty:.3f} (k3 {rollout.kl_nonnegative:.3f}) "
                        f"β {self.kl_controller.value:.4f} "
                        f"entropy {rollout.entropy:.2f} vloss {update['value_loss']:.4f} "
                        f"clip {update['policy_clipfrac']:.2f}/{update['value_clipfrac']:.2f} "
                        f"approx_kl {update['approx_kl']:.4f} len {rollout.response_length:.1f} "
                        f"{rollout.tokens_per_second:.0f} tok/s"
                    )
                if self.step < cfg.total_steps:  # trlx's post_backward_callback: β moves once per PPO epoch
                    self.kl_controller.update(rollout.kl_penalty, n_steps=cfg.batch_size)
            self.log(f"phase done: {steps_per_phase} updates in {time.perf_counter() - started:.1f}s")
            if self.step - last_saved >= cfg.checkpoint_interval or self.step >= cfg.total_steps:
                self._save()
                last_saved = self.step
        return self.history
