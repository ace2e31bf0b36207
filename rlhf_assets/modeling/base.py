"""The base model every trained model starts from: a hub checkpoint or a tiny GPT-NeoX built locally.

A model artifact (`base_model`, `sft_model`) always holds the tokenizer and `base_model.json`. For the tiny
preset it also holds
the initialised weights; for hub presets it records the hub id (or local directory) instead of copying 24 GB
of GPT-J weights into the store, and steps load the weights from there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoTokenizer, GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerBase

POINTER_FILE = "base_model.json"


@dataclass(frozen=True)
class BaseModelRef:
    """Where a step finds the base weights and tokenizer."""

    weights: str
    tokenizer_dir: Path

    @classmethod
    def read(cls, directory: Path) -> BaseModelRef:
        """Resolve a model artifact directory into its weights source and tokenizer."""
        pointer = directory / POINTER_FILE
        if not pointer.exists():
            raise FileNotFoundError(f"{directory} is not a model artifact (no {POINTER_FILE})")
        info = json.loads(pointer.read_text())
        weights = str(directory) if info["kind"] == "local" else info["source"]
        return cls(weights=weights, tokenizer_dir=directory)

    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The tokenizer, with a pad token guaranteed (GPT-J/Pythia ship none; trlx pads with EOS)."""
        tokenizer = load_tokenizer(self.tokenizer_dir)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer


class TokenizerLoadError(ValueError):
    """A tokenizer the tokenizers library cannot load (it panicked instead of raising)."""


def load_tokenizer(directory: Path | str) -> PreTrainedTokenizerBase:
    """`AutoTokenizer.from_pretrained`, with a Rust panic inside `tokenizers` (e.g. a pre-tokenizer regex it cannot
    compile) turned into an error naming the folder: the panic is a `BaseException`, which would get past every
    `except Exception` and end the step without a reason."""
    try:
        return AutoTokenizer.from_pretrained(directory)
    except BaseException as error:
        # tokenizers reports a file it cannot parse as a bare `Exception`, and a Rust panic as `PanicException`;
        # anything more specific (OSError for a missing folder, ImportError, KeyboardInterrupt) passes through.
        if type(error) is not Exception and type(error).__name__ != "PanicException":
            raise
        detail = (str(error).splitlines() or [""])[0][:300]
        raise TokenizerLoadError(f"{directory}: the tokenizer cannot be loaded ({type(error).__name__}: {detail}); "
                                 "check tokenizer.json's normalizer and pre-tokenizer patterns") from None


def build_tiny_gpt_neox(
    tokenizer: PreTrainedTokenizerBase,
    *,
    num_layers: int,
    hidden_size: int,
    num_heads: int,
    max_position_embeddings: int,
    seed: int,
) -> GPTNeoXForCausalLM:
    """A freshly initialised GPT-NeoX sized by the preset, deterministic for a given seed."""
    if hidden_size % num_heads:
        raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
    config = GPTNeoXConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=4 * hidden_size,
        max_position_embeddings=max_position_embeddings,
        rotary_pct=0.25,
        use_parallel_residual=True,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return GPTNeoXForCausalLM(config)


def count_parameters(model: torch.nn.Module) -> int:
    """All parameters, trainable or not: the model-size figure shown in metadata."""
    return sum(p.numel() for p in model.parameters())


def write_pointer(directory: Path, kind: str, source: str, parameters: int) -> None:
    """Record how to load the model in `directory`: `local` weights here, or `hub` weights at `source`."""
    info = {"kind": kind, "source": source, "parameters": parameters}
    (directory / POINTER_FILE).write_text(json.dumps(info, indent=2))
