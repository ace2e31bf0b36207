"""Turning (prompt, response) text into fixed-budget token ids the way RLHF needs it.

HH prompts are whole dialogues and often longer than the context. The response is what the loss (SFT) or the
reward (RM, read at the last token) is about, so it is kept and the prompt is cut from the left, keeping the
turns nearest the response. Doing this before the trainers see the data keeps TRL from dropping long rows.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class EncodedPair:
    input_ids: list[int]
    completion_mask: list[int]


def encode_prompt_response(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    response: str,
    *,
    max_length: int,
    max_response_tokens: int,
    add_eos: bool = True,
) -> EncodedPair:
    """Prompt ids (left-truncated) + response ids (right-truncated, EOS-terminated) within `max_length`.

    The EOS always survives: a reward model is read there (`modeling.scoring.RewardReadout`).
    """
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    eos = [tokenizer.eos_token_id] if add_eos else []
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"][:min(max_response_tokens,
                                                                                  max_length - len(eos))] + eos
    prompt_budget = max_length - len(response_ids)
    prompt_ids = prompt_ids[len(prompt_ids) - prompt_budget :] if prompt_budget else []
    return EncodedPair(prompt_ids + response_ids, [0] * len(prompt_ids) + [1] * len(response_ids))


def encode_prompts(tokenizer: PreTrainedTokenizerBase, prompts: list[str], budget: int | None) -> list[list[int]]:
    """Prompt ids cut from the left to `budget` tokens (the end of the dialogue matters most); None keeps all."""
    encoded = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    return [ids[-budget:] if budget else ids for ids in encoded]
