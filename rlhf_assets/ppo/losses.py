"""PPO's clipped policy and value losses over masked (B, T) response tensors."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlhf_assets.ppo.advantages import masked_mean


@dataclass(frozen=True)
class PolicyLoss:
    loss: torch.Tensor
    clip_fraction: float
    approx_kl: float


@dataclass(frozen=True)
class ValueLoss:
    loss: torch.Tensor
    clip_fraction: float


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cliprange: float,
) -> PolicyLoss:
    """max(−A·r, −A·clip(r, 1±ε)) averaged over response tokens; r = π/π_old per token."""
    log_ratio = (logprobs - old_logprobs) * mask
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.max(unclipped, clipped), mask)
    with torch.no_grad():
        approx_kl = masked_mean((ratio - 1) - log_ratio, mask)
        clip_fraction = masked_mean((clipped > unclipped).float(), mask)
    return PolicyLoss(loss, float(clip_fraction), float(approx_kl))


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    cliprange_value: float,
) -> ValueLoss:
    """½·max((V − R)², (clip(V, V_old ± ε) − R)²) averaged over response tokens."""
    clipped_values = torch.clamp(values, old_values - cliprange_value, old_values + cliprange_value)
    unclipped_error = (values - returns) ** 2
    clipped_error = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(unclipped_error, clipped_error), mask)
    with torch.no_grad():
        clip_fraction = masked_mean((clipped_error > unclipped_error).float(), mask)
    return ValueLoss(loss, float(clip_fraction))
