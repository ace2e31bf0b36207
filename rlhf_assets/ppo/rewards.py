"""Turning reward-model scores into PPO rewards: the recipe's delta against the chosen reply, scaling, clipping,
the KL penalty."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from rlhf_assets.modeling.reward_model import RewardModelScorer


@dataclass
class RunningMoments:
    """Running mean/std of scores across batches (Chan et al. parallel update), as trlx's `RunningMoments`."""

    mean: float = 0.0
    var: float = 1.0
    count: float = 1e-24

    def update(self, scores: torch.Tensor) -> tuple[float, float]:
        """Fold a batch in; returns the batch's own (mean, std)."""
        batch_mean = float(scores.mean())
        batch_var = float(scores.var(unbiased=False)) if scores.numel() > 1 else 0.0
        batch_count = scores.numel()
        delta = batch_mean - self.mean
        total = self.count + batch_count
        new_sum_sq = self.var * self.count + batch_var * batch_count + delta**2 * self.count * batch_count / total
        self.mean += delta * batch_count / total
        self.var = new_sum_sq / total
        self.count = total
        return batch_mean, batch_var**0.5

    @property
    def std(self) -> float:
        return (self.var * self.count / max(self.count - 1, 1)) ** 0.5

    def state_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.mean, self.var, self.count = float(state["mean"]), float(state["var"]), float(state["count"])


@dataclass
class RewardScaler:
    """trlx's reward normalisation (`AcceleratePPOTrainer.make_experience`), applied once per rollout chunk.

    Raw scores are clipped to ±`cliprange_reward` first, the running moments fold in the *clipped* scores of
    every rank, and only then are scores divided by the running std (`running`) or by the std of the first
    chunk (`ref`, when `ref_std` is not given). Clipping first keeps one outlier from inflating the std for the
    rest of the run, and makes the clip a bound on RM score units, as the recipe's `cliprange_reward=10` means.
    """

    mode: str
    cliprange_reward: float
    ref_std: float | None = None
    moments: RunningMoments = field(default_factory=RunningMoments)

    def __post_init__(self) -> None:
        if self.mode not in ("running", "ref", "none"):
            raise ValueError(f"scale_reward must be 'running', 'ref' or 'none', got {self.mode!r}")

    def __call__(self, scores: torch.Tensor, all_scores: torch.Tensor | None = None) -> torch.Tensor:
        """This rank's scaled scores; `all_scores` (every rank's, this chunk) feed the shared statistics."""
        everyone = scores if all_scores is None else all_scores
        if self.cliprange_reward:
            scores = scores.clamp(-self.cliprange_reward, self.cliprange_reward)
            everyone = everyone.clamp(-self.cliprange_reward, self.cliprange_reward)
        if self.ref_std is None:
            self.ref_std = float(everyone.std()) if everyone.numel() > 1 else 1.0
        self.moments.update(everyone)
        if self.mode == "running":
            return scores / max(self.moments.std, 1e-8)
        if self.mode == "ref":
            return scores / max(self.ref_std, 1e-8)
        return scores

    def state_dict(self) -> dict[str, object]:
        return {"moments": self.moments.state_dict(), "ref_std": self.ref_std}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.moments.load_state_dict(state["moments"])  # type: ignore[arg-type]
        self.ref_std = state["ref_std"]  # type: ignore[assignment]


def per_token_rewards(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rewards, kl) each (B, T): −β·(log π − log π_ref) on every response token, the score on the last one."""
    kl = (logprobs - ref_logprobs) * mask
    rewards = -kl_coef * kl
    last = mask.sum(dim=1).long() - 1
    rows = torch.arange(scores.shape[0])
    rewards[rows, last.clamp(min=0)] += scores * (last >= 0)
    return rewards, kl


class DeltaReward:
    """reward = RM(prompt + sample) − RM(prompt + chosen), the recipe's baseline-subtracted reward.

    Chosen-response scores are computed once per prompt and cached; the chosen response is scored whole, as
    trlx's `examples/hh/ppo_hh.py` `reward_fn` does (prompt + original_output + EOS, left-truncated).
    """

    def __init__(self, scorer: RewardModelScorer, prompts: Sequence[str], chosen: Sequence[str] | None) -> None:
        self.scorer, self.prompts, self.chosen = scorer, list(prompts), list(chosen) if chosen else None
        self._baseline: dict[int, float] = {}

    def __call__(self, indices: list[int], responses: list[str]) -> torch.Tensor:
        scores = self.scorer.score([self.prompts[i] for i in indices], responses)
        if self.chosen is None:
            return scores
        missing = [i for i in dict.fromkeys(indices) if i not in self._baseline]
        if missing:
            baseline = self.scorer.score([self.prompts[i] for i in missing], [self.chosen[i] for i in missing],
                                         whole_response=True)
            self._baseline.update(zip(missing, baseline.tolist(), strict=True))
        return scores - torch.tensor([self._baseline[i] for i in indices])
