"""Everything about scoring text with a reward model: where its scalar is read, batched scoring, the scorer
the steps use, and the conversion of published trlx reward models.

Where a reward model's scalar is read, and scoring in batches at that position.

A reward model is a value head over a causal LM's hidden states; which position it reads is part of the model,
fixed by how it was trained. The recipe's reward model (`Dahoas/gptj-rm-static`, read by trlx's
`examples/hh/ppo_hh.py`) reads the EOS appended after prompt + response. Hugging Face's sequence-classification
forward instead reads "the last non-pad token", and with pad = EOS (GPT-J and Pythia ship no pad token) that is
the last *content* token, one before the EOS. So the position is never left to `pad_token_id`: `RewardReadout`
says it, the reward artifact records it, and training and scoring both take the head's per-token output and
gather the position computed from each sequence's length.

Loading reward models published in trlx's `GPTRewardModel` format (e.g. `Dahoas/gptj-rm-static`).

That format is a bare `state_dict` (`.pt`/`.bin`) of a causal LM's trunk under `transformer.` plus a bias-free
`v_head` linear layer, read at the EOS appended after prompt + response. A Hugging Face `*ForSequenceClassification`
model with one label has the same trunk and a bias-free `score` head, so we convert once and the rest of the graph
sees one reward-model format; where the head is read is not the classifier's own pooling (with pad = EOS that is
one token early) but `RewardReadout` (below).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from transformers import AutoConfig, AutoModelForSequenceClassification, PreTrainedModel, PreTrainedTokenizerBase

from rlhf_assets.modeling.encoding import encode_prompt_response

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


class RewardModelScorer:
    """Scores (prompt, response) texts with a sequence-classification reward model.

    Responses are decoded from the policy's tokens and re-tokenized with the reward model's tokenizer, so a
    policy and reward model with different tokenizers still agree on the text being judged. `readout` (recorded
    in the reward artifact) says whether EOS ends the sequence and where the head is read.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        readout: RewardReadout,
        max_length: int,
        max_response_tokens: int,
        batch_size: int = 32,
        trained_length: int | None = None,
    ) -> None:
        self.model, self.tokenizer = model.eval().requires_grad_(False), tokenizer
        self.readout, self.max_length, self.max_response_tokens = readout, max_length, max_response_tokens
        self.batch_size, self.trained_length = batch_size, trained_length

    @property
    def context_length(self) -> int:
        """The longest input the reward model should read: the length it was trained on (the recipe's
        gptj-rm-static: 1,024, as trlx's reward tokenizer cuts), within its position and tokenizer limits."""
        config = self.model.config
        positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
        limits = [n for n in (self.trained_length, positions, self.tokenizer.model_max_length) if n and n < 10**6]
        return min(limits, default=self.max_length)

    def score(self, prompts: Sequence[str], responses: Sequence[str], *, whole_response: bool = False) -> torch.Tensor:
        """(B,) rewards for each prompt + response.

        Policy samples are read within the PPO budget (`max_length`, `max_response_tokens`). `whole_response`
        reads a reference response whole, prompt + response cut from the left to the reward model's context:
        trlx scores the chosen baseline that way, and cutting it to the sample length would compare a
        full answer's sample against half an answer.
        """
        if whole_response:  # trlx: tokenizer(prompt + response + eos, truncation_side="left")
            eos = [self.readout.eos_token_id] if self.readout.append_eos else []
            sequences = [(self.tokenizer(p, add_special_tokens=False)["input_ids"]
                          + self.tokenizer(r, add_special_tokens=False)["input_ids"] + eos)[-self.context_length:]
                         for p, r in zip(prompts, responses, strict=True)]
        else:
            sequences = [
                encode_prompt_response(self.tokenizer, p, r, max_length=self.max_length,
                                       max_response_tokens=self.max_response_tokens,
                                       add_eos=self.readout.append_eos).input_ids
                for p, r in zip(prompts, responses, strict=True)
            ]
        return reward_scores(self.model, sequences, self.readout, self.batch_size)


TRUNK_PREFIX = "transformer."
HEAD_KEY = "v_head.weight"


def resolve_checkpoint_file(source: str) -> Path:
    """Find the weights file in a local directory, or download the hub repo first (users with internet)."""
    directory = Path(source)
    if not directory.is_dir():
        from huggingface_hub import snapshot_download

        directory = Path(snapshot_download(source, allow_patterns=["*.pt", "*.bin"]))
    for candidate in sorted(directory.iterdir()):
        if candidate.suffix in (".pt", ".bin"):
            return candidate
    raise FileNotFoundError(f"{source}: no trlx reward checkpoint (*.pt or *.bin) found in {directory}")


def load_trlx_reward_model(source: str, trunk: str, pad_token_id: int) -> PreTrainedModel:
    """Build a one-label sequence-classification model from a trlx reward checkpoint over `trunk`'s config."""
    checkpoint = resolve_checkpoint_file(source)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if HEAD_KEY not in state:
        raise ValueError(f"{checkpoint}: not a trlx reward model, key {HEAD_KEY!r} is missing")
    config = AutoConfig.from_pretrained(trunk, num_labels=1, pad_token_id=pad_token_id)
    model = AutoModelForSequenceClassification.from_config(config)
    prefix = model.base_model_prefix
    converted = {f"{prefix}.{k[len(TRUNK_PREFIX):]}": v for k, v in state.items() if k.startswith(TRUNK_PREFIX)}
    converted["score.weight"] = state[HEAD_KEY]
    unknown = sorted(k for k in state if k != HEAD_KEY and not k.startswith(TRUNK_PREFIX))
    if unknown:
        raise ValueError(f"{checkpoint}: unexpected keys for a trlx reward model: {unknown[:5]}")
    result = model.load_state_dict(converted, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith(("masked_bias", ".bias_mask", "attn.bias"))]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{checkpoint}: does not match trunk {trunk!r}: missing {missing[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
    return model.eval()
