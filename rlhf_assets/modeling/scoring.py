"""Reward-model scoring in batches, shared by reward evaluation and (later) PPO and auto-preference."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedModel


@torch.no_grad()
def reward_scores(
    model: PreTrainedModel, sequences: Sequence[Sequence[int]], pad_token_id: int, batch_size: int = 32
) -> torch.Tensor:
    """Scalar reward per token sequence, read at its last real token (right padding, explicit mask)."""
    model.eval()
    device = next(model.parameters()).device
    scores = []
    for start in range(0, len(sequences), batch_size):
        batch = sequences[start : start + batch_size]
        width = max(len(s) for s in batch)
        ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, seq in enumerate(batch):
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[row, : len(seq)] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        scores.append(logits[:, 0].float().cpu())
    return torch.cat(scores)
