"""Where a reward model's scalar is read, and scoring in batches at that position.

A reward model is a value head over a causal LM's hidden states; which position it reads is part of the model,
fixed by how it was trained. The recipe's reward model (`Dahoas/gptj-rm-static`, read by trlx's
`examples/hh/ppo_hh.py`) reads the EOS appended after prompt + response. Hugging Face's sequence-classification
forward instead reads "the last non-pad token", and with pad = EOS (GPT-J and Pythia ship no pad token) that is
the last *content* token, one before the EOS. So the position is never left to `pad_token_id`: `RewardReadout`
says it, the reward artifact records it, and training and scoring both take the head's per-token output and
gather the position computed from each sequence's length.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from transformers import PreTrainedModel

EOS_READOUT_REFERENCE = ("trlx examples/hh/ppo_hh.py RewardModel.forward (v_head at the first EOS of prompt + "
                         "response + EOS); Dahoas reward-modeling GPTRewardModel, trained the same way")


class RewardReadout(BaseModel):
    """How a reward model's sequence is built and where its head is read, as recorded in the reward artifact.

    `eos`: the sequence is prompt + response + EOS and the head is read at that EOS (trlx-format reward models
    and the ones we train). `model`: an external sequence classifier read by its own forward (its authors'
    pooling, e.g. a first-token [CLS] head), used only for a configured judge.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    rule: Literal["eos", "model"] = Field(description="eos: the head at the EOS appended after the response; "
                                          "model: the classifier's own pooling")
    eos_token_id: int | None = Field(description="The EOS appended and read (rule eos)")
    reference: str = Field(EOS_READOUT_REFERENCE, description="The code whose convention this follows")

    @property
    def append_eos(self) -> bool:
        """Whether sequences end with EOS: the token the head is read at."""
        return self.rule == "eos"


def eos_readout(eos_token_id: int | None) -> RewardReadout:
    """The recipe's readout, refusing a tokenizer without EOS (there would be no position to read)."""
    if eos_token_id is None:
        raise ValueError("a reward model read at EOS needs a tokenizer with an EOS token")
    return RewardReadout(rule="eos", eos_token_id=eos_token_id)


def score_head(model: torch.nn.Module) -> torch.nn.Module:
    """The value head of a Hugging Face sequence-classification model (`score` on GPT-J, GPT-NeoX, GPT-2, Llama)."""
    base = getattr(model, "module", model)  # DDP / DeepSpeed engines wrap the model
    head = getattr(base, "score", None)
    if not isinstance(head, torch.nn.Module):
        raise TypeError(f"{type(base).__name__} has no `score` head to read per token")
    return head


def last_attended_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B,) index of each row's last attended token, for right or left padding alike."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (positions * attention_mask.to(positions.dtype)).argmax(dim=1)


def rewards_at(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               positions: torch.Tensor) -> torch.Tensor:
    """(B,) head outputs at `positions`, with gradients when enabled.

    The forward runs through `model` itself (a DDP or DeepSpeed wrapper included, so gradient synchronisation is
    untouched); a hook keeps the head's per-token output, which the model's own pooling then discards.
    """
    captured: list[torch.Tensor] = []
    handle = score_head(model).register_forward_hook(lambda _module, _inputs, output: captured.append(output))
    try:
        model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    finally:
        handle.remove()
    per_token = captured[-1][..., 0]
    return per_token.gather(1, positions.view(-1, 1)).squeeze(1)


def readout_positions(sequences: Sequence[Sequence[int]], readout: RewardReadout) -> list[int]:
    """The read position of each sequence under `readout`: its EOS, which the encoder put last.

    The position comes from the sequence's length; the EOS rule is checked, not assumed, so a sequence built
    without its EOS (truncated, or encoded for another reward model) fails loudly instead of scoring a token the
    head was never trained on.
    """
    for row, sequence in enumerate(sequences):
        if not sequence:
            raise ValueError(f"sequence {row} is empty: nothing to score")
        if readout.rule == "eos" and sequence[-1] != readout.eos_token_id:
            raise ValueError(f"sequence {row} does not end with EOS {readout.eos_token_id}: the reward model is "
                             f"read at the EOS after prompt + response ({readout.reference})")
    return [len(sequence) - 1 for sequence in sequences]


@torch.no_grad()
def reward_scores(model: PreTrainedModel, sequences: Sequence[Sequence[int]], readout: RewardReadout,
                  batch_size: int = 32) -> torch.Tensor:
    """Scalar reward per token sequence, read where `readout` says (right padding, explicit mask)."""
    model.eval()
    device = next(model.parameters()).device
    scores = []
    for start in range(0, len(sequences), batch_size):
        batch = sequences[start : start + batch_size]
        width = max(len(s) for s in batch)
        ids = torch.zeros((len(batch), width), dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, seq in enumerate(batch):
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[row, : len(seq)] = 1
        if readout.rule == "model":
            pad = model.config.pad_token_id
            ids[mask == 0] = pad if pad is not None else 0
            scores.append(model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits[:, 0].float().cpu())
            continue
        positions = torch.tensor(readout_positions(batch, readout), dtype=torch.long)
        scores.append(rewards_at(model, ids.to(device), mask.to(device), positions.to(device)).float().cpu())
    return torch.cat(scores)
