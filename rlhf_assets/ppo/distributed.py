"""What PPO needs from several processes: one prompt stream, one reward model, global statistics.

With N training processes each rank samples its own share of the prompts; the reward model lives in the main
process only (the recipe puts it on a GPU of its own), so texts are gathered there, scored and the scores sent
back; reward scaling, advantage whitening and the KL that drives the controller use statistics over all ranks,
so every rank applies the same β and the same reward scale. With one process every function is the identity.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object

from rlhf_assets.ppo.advantages import masked_mean, masked_var

T = TypeVar("T")


def gather_lists(accelerator: Accelerator, items: Sequence[T]) -> list[T]:
    """Every rank's items concatenated in rank order (every rank gets the whole list)."""
    if accelerator.num_processes == 1:
        return list(items)
    return list(gather_object(list(items)))


def broadcast_from_main(accelerator: Accelerator, value: Any) -> Any:
    """The main process's `value` on every rank."""
    if accelerator.num_processes == 1:
        return value
    box = [value]
    broadcast_object_list(box, from_process=0)
    return box[0]


def global_mean(accelerator: Accelerator, value: float) -> float:
    """Mean over ranks of a per-rank scalar (each rank holds the same number of samples)."""
    if accelerator.num_processes == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=accelerator.device)
    return float(accelerator.reduce(tensor, reduction="mean"))


def global_sum(accelerator: Accelerator, value: float) -> float:
    """Sum over ranks of a per-rank scalar."""
    if accelerator.num_processes == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=accelerator.device)
    return float(accelerator.reduce(tensor, reduction="sum"))


def global_masked_moments(
    accelerator: Accelerator, values: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, unbiased variance) of the masked positions of `values` across all ranks."""
    if accelerator.num_processes == 1:
        return masked_mean(values, mask), masked_var(values, mask)
    sums = torch.stack([(values * mask).sum(), (values**2 * mask).sum(), mask.sum()]).double()
    if accelerator.num_processes > 1:
        sums = accelerator.reduce(sums.to(accelerator.device), reduction="sum").cpu()
    total, total_sq, count = sums.tolist()
    mean = total / max(count, 1)
    var = (total_sq - count * mean**2) / max(count - 1, 1)
    return torch.tensor(mean, dtype=values.dtype), torch.tensor(var, dtype=values.dtype)
