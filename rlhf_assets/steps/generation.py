"""Sampling evaluation responses: a policy artifact in, decoded texts out, the same seed for every model.

Generation is batched and KV-cached (`ppo.sampling.sample_responses`: one `generate` call per batch of
left-padded prompts), so 100 prompts cost a handful of calls, not 100 × max_new_tokens forward passes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from rlhf_assets.modeling.base import BaseModelRef
from rlhf_assets.modeling.complete_load import load_complete
from rlhf_assets.modeling.encoding import encode_prompts
from rlhf_assets.ppo.sampling import sample_responses
from rlhf_assets.specs import GenerationSpec
from rlhf_assets.steps.runtime import StepInputError


def load_policy(directory: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """An `sft_model` or `ppo_policy` artifact as (model on the best device, left-padding tokenizer)."""
    try:
        ref = BaseModelRef.read(directory)
    except FileNotFoundError as exc:
        raise StepInputError(str(exc)) from None
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = load_complete(AutoModelForCausalLM, ref.weights, dtype=dtype).to(device).eval()
    tokenizer = ref.tokenizer()
    tokenizer.padding_side = "left"
    return model, tokenizer


@dataclass(frozen=True)
class Generation:
    """What sampling produced: per prompt its token ids and samples (ids and decoded text), and the speed."""

    texts: list[list[str]]
    prompt_ids: list[list[int]]
    response_ids: list[list[list[int]]]
    tokens_per_second: float


@torch.no_grad()
def generate_texts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    spec: GenerationSpec,
    *,
    samples_per_prompt: int = 1,
    log: Callable[[str], None] = print,
) -> Generation:
    """`samples_per_prompt` sampled continuations of each prompt, as text and as the sampled token ids (so a
    log-probability can be computed on exactly what was sampled, not on a re-tokenized text).

    The RNG is reset to `spec.seed` first, so two models given the same prompts draw with the same seed.
    """
    torch.manual_seed(spec.seed)
    encoded = encode_prompts(tokenizer, prompts, spec.prompt_tokens)
    jobs = [i for i in range(len(prompts)) for _ in range(samples_per_prompt)]
    texts: list[list[str]] = [[] for _ in prompts]
    ids: list[list[list[int]]] = [[] for _ in prompts]
    tokens, started = 0, time.perf_counter()
    for start in range(0, len(jobs), spec.batch_size):
        batch = jobs[start: start + spec.batch_size]
        responses = sample_responses(
            model, tokenizer, [encoded[i] for i in batch], max_new_tokens=spec.max_new_tokens, top_k=spec.top_k,
            top_p=spec.top_p, temperature=spec.temperature, stop_sequences=spec.stop_sequences)
        tokens += sum(len(r) for r in responses)
        decoded = tokenizer.batch_decode(responses, skip_special_tokens=True)
        for index, text, response in zip(batch, decoded, responses, strict=True):
            texts[index].append(text.strip())
            ids[index].append(list(response))
        log(f"generated {min(start + spec.batch_size, len(jobs))}/{len(jobs)} samples")
    return Generation(texts, encoded, ids, tokens / max(time.perf_counter() - started, 1e-9))
