"""Batched rollouts: left-padded, KV-cached sampling, stop-sequence truncation, per-token log-probs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase


def truncate_at_stop(text: str, stop_sequences: Sequence[str]) -> str:
    """Cut a sampled response at the first stop sequence (the model starting the next dialogue turn)."""
    cut = len(text)
    for stop in stop_sequences:
        found = text.find(stop)
        if 0 <= found < cut:
            cut = found
    return text[:cut].rstrip() if cut < len(text) else text


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) with every sequence right-aligned, as batched generation needs."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            ids[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
            mask[row, width - len(seq):] = 1
    return ids, mask


def right_pad(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) with every sequence left-aligned; responses are stored this way."""
    width = max(1, max(len(s) for s in sequences))
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids, mask


def position_ids_for(mask: torch.Tensor) -> torch.Tensor:
    """Positions counted from each row's first real token, so left padding does not shift them."""
    return (mask.cumsum(dim=1) - 1).clamp(min=0)


@torch.no_grad()
def sample_responses(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    top_k: int,
    top_p: float,
    temperature: float,
    stop_sequences: Sequence[str],
    do_sample: bool = True,
) -> list[list[int]]:
    """Sample one response per prompt in a single `generate` call (KV cache on) and cut at stop sequences.

    EOS is handled as trlx's `decode(append_eos_token=True)` does: a response that ended naturally keeps the
    EOS it sampled, one trimmed at a stop sequence is re-tokenized and gets an EOS, and one cut by
    `max_new_tokens` keeps all its sampled tokens and gets none, so no token the policy never chose is
    trained on and capped responses are not taught to stop.
    """
    device = next(model.parameters()).device
    ids, mask = left_pad(prompts, tokenizer.pad_token_id)
    output = model.generate(
        input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
        do_sample=do_sample, top_k=top_k or None, top_p=top_p, temperature=temperature, use_cache=True,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    return [finish_response(row, tokenizer, stop_sequences, max_new_tokens)
            for row in output[:, ids.shape[1]:].tolist()]


def finish_response(
    sampled: list[int], tokenizer: PreTrainedTokenizerBase, stop_sequences: Sequence[str], max_new_tokens: int
) -> list[int]:
    """The tokens PPO trains on for one generated row (see `sample_responses` for the EOS rule)."""
    eos = tokenizer.eos_token_id
    ended = eos in sampled
    tokens = sampled[: sampled.index(eos)] if ended else sampled
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    trimmed = truncate_at_stop(text, stop_sequences)
    if trimmed != text:
        return tokenizer(trimmed, add_special_tokens=False)["input_ids"][: max_new_tokens - 1] + [eos]
    return [*tokens, eos] if ended else tokens


def logprobs_of_labels(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(label) for each position, from logits over the vocabulary."""
    return torch.gather(F.log_softmax(logits.float(), dim=-1), 2, labels.unsqueeze(-1)).squeeze(-1)


def join_query_response(
    query_ids: torch.Tensor, query_mask: torch.Tensor, response_ids: torch.Tensor, response_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-padded queries + right-padded responses as one batch: (ids, attention mask, position ids)."""
    ids = torch.cat([query_ids, response_ids], dim=1)
    mask = torch.cat([query_mask, response_mask], dim=1)
    return ids, mask, position_ids_for(mask)


def response_logits(
    model: PreTrainedModel, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, response_width: int,
    **kwargs: object,
) -> tuple[torch.Tensor, object]:
    """(B, response_width, V) logits predicting each response token, and the model output.

    Only the positions that predict response tokens go through the LM head (`logits_to_keep`): with a
    1,024-token context and 128 new tokens that is 8× less LM-head work than projecting every position.
    """
    output = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False,
                   logits_to_keep=response_width + 1, **kwargs)
    return output.logits[:, :-1], output


def response_logprobs(logits: torch.Tensor, ids: torch.Tensor, response_width: int) -> torch.Tensor:
    """(B, response_width) log-probs of the response tokens (the last `response_width` ids)."""
    return logprobs_of_labels(logits, ids[:, ids.shape[1] - response_width:])


@torch.no_grad()
def sequence_kl(
    policy: PreTrainedModel,
    reference: PreTrainedModel,
    prompts: list[list[int]],
    responses: list[list[int]],
    pad_id: int,
    batch_size: int = 16,
) -> torch.Tensor:
    """Σ_t log π − log π_ref per response: the KL estimate of each sample under the policy, in batches."""
    device = next(policy.parameters()).device
    per_sample = []
    for start in range(0, len(prompts), batch_size):
        query_ids, query_mask = left_pad(prompts[start: start + batch_size], pad_id)
        response_ids, response_mask = right_pad(responses[start: start + batch_size], pad_id)
        ids, mask, positions = (t.to(device) for t in join_query_response(query_ids, query_mask, response_ids,
                                                                           response_mask))
        width = response_ids.shape[1]
        logp = response_logprobs(response_logits(policy, ids, mask, positions, width)[0], ids, width)
        ref = response_logprobs(response_logits(reference, ids, mask, positions, width)[0], ids, width)
        per_sample.append(((logp - ref) * response_mask.to(device)).sum(1).cpu())
    return torch.cat(per_sample)
