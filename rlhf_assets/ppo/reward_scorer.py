"""The reward model as PPO's reward function: text in, scalar per sample out, with the recipe's delta."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlhf_assets.modeling.encoding import encode_prompt_response
from rlhf_assets.modeling.scoring import RewardReadout, reward_scores


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
