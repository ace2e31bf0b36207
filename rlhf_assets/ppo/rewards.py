"""Turning reward-model scores into per-token PPO rewards: scaling, clipping, the KL penalty."""

from __future__ import annotations

from dataclasses import dataclass

import torch


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


def scale_scores(
    scores: torch.Tensor,
    mode: str,
    moments: RunningMoments,
    ref_std: float | None,
    cliprange_reward: float,
    all_scores: torch.Tensor | None = None,
) -> torch.Tensor:
    """Scale by the running std (`running`), a fixed reference std (`ref`) or not at all, then clip.

    The running moments fold in `all_scores` (every rank's scores) when given, so all ranks share one scale.
    """
    if mode == "running":
        moments.update(scores if all_scores is None else all_scores)
        scores = scores / max(moments.std, 1e-8)
    elif mode == "ref":
        if not ref_std:
            raise ValueError("scale_reward='ref' needs ref_std")
        scores = scores / ref_std
    elif mode != "none":
        raise ValueError(f"scale_reward must be 'running', 'ref' or 'none', got {mode!r}")
    return torch.clamp(scores, -cliprange_reward, cliprange_reward) if cliprange_reward else scores


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
