"""Rollout storage: what one batch of sampled responses carries into the PPO update."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

RESPONSE_FIELDS = ("response_ids", "response_mask", "logprobs", "ref_logprobs", "values", "rewards")


@dataclass
class Experience:
    """A batch of B rollouts. Queries are left-padded to Tq, responses right-padded to Tr."""

    query_ids: torch.Tensor  # (B, Tq) prompt tokens, left-padded
    query_mask: torch.Tensor  # (B, Tq) 1 on real prompt tokens
    response_ids: torch.Tensor  # (B, Tr) sampled tokens, EOS-terminated, right-padded
    response_mask: torch.Tensor  # (B, Tr) 1 on real response tokens
    logprobs: torch.Tensor  # (B, Tr) log π_old of each response token
    ref_logprobs: torch.Tensor  # (B, Tr) log π_ref (the frozen SFT model) of each response token
    values: torch.Tensor  # (B, Tr) V_old at each response position
    rewards: torch.Tensor  # (B, Tr) −β·KL per token, plus the scaled score on the last token
    scores: torch.Tensor  # (B,) reward-model score (delta vs chosen when configured), before scaling

    def __len__(self) -> int:
        return self.query_ids.shape[0]

    def select(self, index: torch.Tensor) -> Experience:
        """Rows `index` of every field (a minibatch)."""
        return Experience(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def trimmed(self) -> Experience:
        """The same rows with response columns cut to the longest response among them (a minibatch as trlx's
        collate pads it, rather than to the whole phase's longest response)."""
        width = max(1, int(self.response_mask.sum(1).max()))
        return Experience(**{f.name: getattr(self, f.name)[:, :width] if f.name in RESPONSE_FIELDS
                             else getattr(self, f.name) for f in fields(self)})

    @staticmethod
    def concatenate(parts: list[Experience], pad_id: int) -> Experience:
        """Stack chunks of different widths: queries re-padded on the left, responses on the right."""
        query_width = max(p.query_ids.shape[1] for p in parts)
        response_width = max(p.response_ids.shape[1] for p in parts)

        def pad(tensor: torch.Tensor, width: int, left: bool, value: float) -> torch.Tensor:
            missing = width - tensor.shape[1]
            padding = (missing, 0) if left else (0, missing)
            return torch.nn.functional.pad(tensor, padding, value=value) if missing else tensor

        merged = {}
        for f in fields(Experience):
            tensors = [getattr(p, f.name) for p in parts]
            if f.name == "scores":
                merged[f.name] = torch.cat(tensors)
                continue
            is_query = f.name.startswith("query")
            value = pad_id if f.name.endswith("_ids") else 0
            width = query_width if is_query else response_width
            merged[f.name] = torch.cat([pad(t, width, is_query, value) for t in tensors])
        return Experience(**merged)
