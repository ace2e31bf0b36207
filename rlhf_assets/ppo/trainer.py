"""The PPO loop: collect `num_rollouts` in `chunk_size` chunks, then `ppo_epochs` of minibatch updates.

One optimizer step consumes `batch_size` rollouts; `total_steps` counts optimizer steps, as in trlx.
Checkpoints are taken between phases (after an update phase), so a resumed run re-collects the next phase's
rollouts from the restored RNG state and continues to exactly `total_steps`.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlhf_assets.ppo.advantages import gae, masked_mean, whiten
from rlhf_assets.ppo.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from rlhf_assets.ppo.config import PPOConfig
from rlhf_assets.ppo.kl_controller import make_kl_controller
from rlhf_assets.ppo.losses import policy_loss, value_loss
from rlhf_assets.ppo.rewards import RunningMoments, per_token_rewards, scale_scores
from rlhf_assets.ppo.rollout import Experience
from rlhf_assets.ppo.sampling import (
    join_query_response,
    left_pad,
    response_logits,
    response_logprobs,
    right_pad,
    sample_responses,
)
from rlhf_assets.ppo.value_head import CausalLMWithValueHead

RewardFn = Callable[[list[int], list[str]], torch.Tensor]
"""(prompt indices, response texts) -> (B,) scores."""


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


class PPOTrainer:
    """PPO against a reward function, KL-held to a frozen reference model.

    With LoRA (`reference=None` and a PEFT-wrapped policy trunk) the reference is the policy with its adapters
    disabled, as trlx does: no second copy of the weights.
    """

    def __init__(
        self,
        config: PPOConfig,
        policy: CausalLMWithValueHead,
        reference: PreTrainedModel | None,
        tokenizer: PreTrainedTokenizerBase,
        prompts: Sequence[list[int]],
        reward_fn: RewardFn,
        checkpoint_dir: Path,
        log: Callable[[str], None] = print,
        accelerator: Accelerator | None = None,
    ) -> None:
        self.config, self.tokenizer, self.prompts, self.reward_fn = config, tokenizer, list(prompts), reward_fn
        self.checkpoint_dir, self.log = checkpoint_dir, log
        self.accelerator = accelerator or Accelerator(cpu=not torch.cuda.is_available())
        trainable = [p for p in policy.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, betas=config.betas, eps=config.eps,
                                      weight_decay=config.weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.total_steps,
                                                               eta_min=config.lr_min)
        self.policy, self.optimizer, self.scheduler = self.accelerator.prepare(policy, optimizer, scheduler)
        self.reference = reference.to(self.accelerator.device).eval().requires_grad_(False) if reference else None
        self.kl_controller = make_kl_controller(config.init_kl_coef, config.target, config.horizon)
        self.moments = RunningMoments()
        self.step = 0
        self.prompt_order: list[int] = []
        self.prompt_cursor = 0
        self.history = TrainingHistory()

    # ---- state -------------------------------------------------------------------------------------------
    def _save(self) -> None:
        unwrapped = self.accelerator.unwrap_model(self.policy)
        state = {"kl_controller": self.kl_controller.state_dict(), "moments": self.moments.state_dict(),
                 "prompt_order": self.prompt_order, "prompt_cursor": self.prompt_cursor,
                 "history": self.history.steps}
        path = save_checkpoint(
            self.checkpoint_dir, self.step,
            {"policy": unwrapped.state_dict(), "optimizer": self.optimizer.state_dict(),
             "scheduler": self.scheduler.state_dict()},
            state,
        )
        self.log(f"checkpoint saved at step {self.step}: {path.name}")

    def _resume(self) -> None:
        found = latest_checkpoint(self.checkpoint_dir)
        if found is None:
            random.seed(self.config.seed)
            np.random.seed(self.config.seed)
            torch.manual_seed(self.config.seed)
            return
        tensors, state = load_checkpoint(found)
        self.accelerator.unwrap_model(self.policy).load_state_dict(tensors["policy"])
        self.optimizer.load_state_dict(tensors["optimizer"])
        self.scheduler.load_state_dict(tensors["scheduler"])
        self.kl_controller.load_state_dict(state["kl_controller"])
        self.moments.load_state_dict(state["moments"])
        self.prompt_order, self.prompt_cursor = state["prompt_order"], state["prompt_cursor"]
        self.step = state["step"]
        self.history = TrainingHistory(steps=state["history"], resumed_from=self.step)
        self.log(f"resumed from {found.name}: step {self.step}, KL coefficient {self.kl_controller.value:.4f}")

    # ---- rollouts ----------------------------------------------------------------------------------------
    def _next_prompts(self, count: int) -> list[int]:
        chosen = []
        while len(chosen) < count:
            if self.prompt_cursor >= len(self.prompt_order):
                self.prompt_order = random.sample(range(len(self.prompts)), len(self.prompts))
                self.prompt_cursor = 0
            chosen.append(self.prompt_order[self.prompt_cursor])
            self.prompt_cursor += 1
        return chosen

    @torch.no_grad()
    def _forward_old(self, batch: Experience) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logprobs, ref_logprobs, values, entropy) of the sampled responses under π_old, π_ref, V_old."""
        device = self.accelerator.device
        ids, mask, positions = (t.to(device) for t in join_query_response(
            batch.query_ids, batch.query_mask, batch.response_ids, batch.response_mask))
        r_width = batch.response_ids.shape[1]
        logits, values = self.policy(ids, mask, positions, r_width)
        logprobs = response_logprobs(logits, ids, r_width)
        step_logits = logits.float()
        entropy = -(step_logits.softmax(-1) * step_logits.log_softmax(-1)).sum(-1)
        ref_logits = self._reference_logits(ids, mask, positions, r_width)
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
        """Sample `num_rollouts` responses in chunks and turn RM scores into per-token rewards."""
        cfg = self.config
        chunks, entropies, generated, started = [], [], 0, time.perf_counter()
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
            scores = self.reward_fn(indices, texts).float().cpu()
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
        scaled = scale_scores(store.scores, cfg.scale_reward, self.moments, cfg.ref_std, cfg.cliprange_reward)
        store.rewards, kl = per_token_rewards(scaled, store.logprobs, store.ref_logprobs, mask,
                                              self.kl_controller.value)
        log_ratio = (store.ref_logprobs - store.logprobs) * mask
        k3 = (torch.exp(log_ratio) - 1 - log_ratio) * mask
        stats = RolloutStats(
            score_mean=float(store.scores.mean()), score_std=float(store.scores.std()),
            kl_penalty=float(kl.sum(1).mean()), kl_nonnegative=float(k3.sum(1).mean()),
            entropy=float(torch.stack(entropies).mean()), response_length=float(mask.sum(1).mean()),
            tokens_per_second=generated / max(time.perf_counter() - started, 1e-9),
        )
        return store, stats

    # ---- updates -----------------------------------------------------------------------------------------
    def _update(self, batch: Experience, advantages: torch.Tensor, returns: torch.Tensor) -> dict[str, float]:
        cfg, device = self.config, self.accelerator.device
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
            advantages = whiten(advantages, mask)
            self.policy.train()
            started = time.perf_counter()
            for _ in range(cfg.ppo_epochs):
                for index in torch.randperm(len(store)).split(cfg.batch_size):
                    if self.step >= cfg.total_steps:
                        break
                    update = self._update(store.select(index), advantages[index], returns[index])
                    self.step += 1
                    self.kl_controller.update(rollout.kl_penalty, n_steps=len(index))
                    record = {"step": float(self.step), **vars(rollout), **update,
                              "kl_coef": self.kl_controller.value, "learning_rate": self.scheduler.get_last_lr()[0]}
                    self.history.steps.append(record)
                    self.log(
                        f"step {self.step}/{cfg.total_steps} score {rollout.score_mean:+.3f}±{rollout.score_std:.3f} "
                        f"KL {rollout.kl_penalty:.3f} (k3 {rollout.kl_nonnegative:.3f}) "
                        f"β {self.kl_controller.value:.4f} "
                        f"entropy {rollout.entropy:.2f} vloss {update['value_loss']:.4f} "
                        f"clip {update['policy_clipfrac']:.2f}/{update['value_clipfrac']:.2f} "
                        f"approx_kl {update['approx_kl']:.4f} len {rollout.response_length:.1f} "
                        f"{rollout.tokens_per_second:.0f} tok/s"
                    )
            self.log(f"phase done: {steps_per_phase} updates in {time.perf_counter() - started:.1f}s")
            if self.step - last_saved >= cfg.checkpoint_interval or self.step >= cfg.total_steps:
                self._save()
                last_saved = self.step
        return self.history
