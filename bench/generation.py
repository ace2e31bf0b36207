"""Batched, KV-cached generation (what the evaluation steps do) vs one prompt at a time, side by side.

The tiny preset's model shape (GPT-NeoX, 2 layers × 128) with a BPE tokenizer fit on the shared HH prompts,
the same prompts and settings for both ways, alternating order over repetitions. Prints tokens/s of each and
the ratio (target ≥ 5× at batch 16).

    .venv/bin/python -m bench.generation [--prompts 64] [--batch-size 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import pandas as pd
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlhf_assets.data.hh import read_jsonl, split_dialogue
from rlhf_assets.modeling.base import build_tiny_gpt_neox
from rlhf_assets.modeling.encoding import encode_prompts
from rlhf_assets.modeling.tokenizer import train_bpe_tokenizer
from rlhf_assets.ppo.sampling import sample_responses
from rlhf_assets.presets import SHARED_HH_PATH, TINY


def _tokens_per_second(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[list[int]], batch_size: int,
    max_new_tokens: int,
) -> float:
    torch.manual_seed(0)
    tokens, started = 0, time.perf_counter()
    for start in range(0, len(prompts), batch_size):
        responses = sample_responses(model, tokenizer, prompts[start: start + batch_size],
                                     max_new_tokens=max_new_tokens, top_k=0, top_p=1.0, temperature=1.0,
                                     stop_sequences=())
        tokens += sum(len(r) for r in responses)
    return tokens / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    dialogues = [record.fields["chosen"] for record in read_jsonl(SHARED_HH_PATH)]
    texts = pd.Series([split_dialogue(d)[0] for d in dialogues if split_dialogue(d)]).drop_duplicates().tolist()
    tokenizer = train_bpe_tokenizer(texts, TINY.base_model.vocab_size)
    tokenizer.padding_side = "left"
    spec = TINY.base_model
    model = build_tiny_gpt_neox(tokenizer, num_layers=spec.num_layers, hidden_size=spec.hidden_size,
                                num_heads=spec.num_heads, max_position_embeddings=spec.max_position_embeddings,
                                seed=0).eval()
    prompts = encode_prompts(tokenizer, texts[: args.prompts], 128)
    batched, single = [], []
    for repeat in range(args.repeats):
        order = [("batched", args.batch_size), ("single", 1)]
        for name, size in order if repeat % 2 == 0 else order[::-1]:
            rate = _tokens_per_second(model, tokenizer, prompts, size, args.max_new_tokens)
            (batched if name == "batched" else single).append(rate)
            print(f"repeat {repeat + 1}: {name:7s} (batch {size:2d}) {rate:8.0f} tokens/s", flush=True)
    ratio = statistics.median(b / s for b, s in zip(batched, single, strict=True))
    print(f"\n{args.prompts} prompts, {args.max_new_tokens} new tokens, {torch.get_num_threads()} threads")
    print(f"batched (batch {args.batch_size}): median {statistics.median(batched):.0f} tokens/s")
    print(f"one prompt at a time: median {statistics.median(single):.0f} tokens/s")
    print(f"ratio batched / one at a time: {ratio:.1f}x (target >= 5x)")


if __name__ == "__main__":
    main()
