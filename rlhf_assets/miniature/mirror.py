"""A local hub mirror: every outside model and dataset the presets name, at toy size, where the real loaders look.

The mirror is a Hugging Face hub cache (`HF_HUB_CACHE`, the hub's own `models--org--name/{blobs,refs,snapshots}`
layout) plus a torch hub cache (`TORCH_HOME`) for Detoxify's published checkpoint. With `HF_HUB_OFFLINE=1` the
product's ordinary code (`snapshot_download`, `from_pretrained`, Detoxify's checkpoint download) finds them there,
so any preset runs exactly as configured, offline, with only sizes shrunk:

- `EleutherAI/gpt-j-6b`: a random GPT-J (the recipe's architecture) with a byte-level BPE and no pad token, its
  weights as `pytorch_model.bin` like the real repository;
- `EleutherAI/pythia-160m`: a random GPT-NeoX, `model.safetensors` and `tokenizer.json`;
- `Dahoas/gptj-rm-static`: `hf_ckpt.pt`, a bare state dict of a GPT-J trunk under `transformer.` plus a bias-free
  `v_head`, as Dahoas's reward-modeling `utils.py` wrote it;
- `Dahoas/rm-static`: `data/train-*.parquet` and `data/test-*.parquet` with its columns (prompt, response,
  chosen, rejected), built from the real Anthropic HH pairs in `shared/data`;
- `allenai/real-toxicity-prompts`: `prompts.jsonl`, the real RTP records in `shared/data`;
- Detoxify `original`: `toxic_original-c1212f89.ckpt` in Detoxify's format over a random BERT published as
  `bert-base-uncased`.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import pandas as pd
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    GPTJConfig,
    GPTJForCausalLM,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    PreTrainedTokenizerBase,
)

from rlhf_assets.artifact_files import file_hashes
from rlhf_assets.data.hh import read_jsonl, to_preference_pairs
from rlhf_assets.modeling.detoxify_format import ORIGINAL_CLASSES
from rlhf_assets.modeling.standin_vocabulary import standin_tokenizer
from rlhf_assets.modeling.tokenizer import train_bpe_tokenizer

DETOXIFY_ORIGINAL_FILE = "toxic_original-c1212f89.ckpt"  # Detoxify's MODEL_URLS["original"], as torch hub caches it
RM_STATIC_FILES = {"train": "data/train-00000-of-00001-2a1df75c6bce91ab.parquet",
                   "test": "data/test-00000-of-00001-8c7c51afc6d45980.parquet"}
MIRROR_TEST_SHARE = 0.2  # of the HH prompts in rm-static's `test` (the real split: 5,103 of 81,359 pairs)
READY_FILE = "mirror.json"


def mirror_environment(root: Path) -> dict[str, str]:
    """The environment under which the product's hub code reads the mirror and nothing else."""
    return {"HF_HUB_CACHE": str(root / "hub"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "TORCH_HOME": str(root / "torch"), "TRANSFORMERS_OFFLINE": "1"}


class HubCacheWriter:
    """Writes repositories in the hub cache's own layout: content-addressed blobs, a snapshot per commit of
    relative symlinks, and `refs/main` naming the commit."""

    def __init__(self, cache: Path) -> None:
        self.cache = cache

    def write(self, repo_type: str, repo_id: str, fill: Callable[[Path], None]) -> str:
        """Publish the files `fill` writes into a folder as `repo_id`'s `main`; returns the commit hash."""
        with tempfile.TemporaryDirectory() as scratch:
            staging = Path(scratch)
            fill(staging)
            files = sorted(p for p in staging.rglob("*") if p.is_file())
            digests = file_hashes(staging)
            commit = hashlib.sha1(json.dumps(digests, sort_keys=True).encode()).hexdigest()
            repo = self.cache / f"{repo_type}s--{repo_id.replace('/', '--')}"
            snapshot = repo / "snapshots" / commit
            (repo / "blobs").mkdir(parents=True, exist_ok=True)
            for path in files:
                relative = path.relative_to(staging)
                blob = repo / "blobs" / digests[relative.as_posix()]
                if not blob.exists():
                    path.replace(blob)
                link = snapshot / relative
                link.parent.mkdir(parents=True, exist_ok=True)
                if not link.exists():
                    link.symlink_to(os.path.relpath(blob, link.parent))
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text(commit)
        return commit


def _gpt_tokenizer(texts: Iterable[str], *, pad: bool) -> PreTrainedTokenizerBase:
    """The GPT-2 family's tokenizer in miniature: byte-level BPE, `<|endoftext|>` as BOS/EOS/UNK; Pythia's vocabulary
    also holds `<|padding|>` but, like GPT-J's, neither sets a pad token."""
    tokenizer = train_bpe_tokenizer(texts, vocab_size=2000)
    if not pad:
        tokenizer.pad_token = None
    return tokenizer


def _gptj(tokenizer: PreTrainedTokenizerBase, seed: int) -> GPTJForCausalLM:
    torch.manual_seed(seed)
    config = GPTJConfig(vocab_size=len(tokenizer), n_positions=2048, n_embd=64, n_layer=2, n_head=4, rotary_dim=8,
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                        tie_word_embeddings=False)
    return GPTJForCausalLM(config)


def _in_mirror_test_split(prompt: str) -> bool:
    """rm-static's own split, independent of ours (salted), so our split of its `test` side is not degenerate."""
    digest = hashlib.sha256(f"rm-static:{prompt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 10_000 < MIRROR_TEST_SHARE * 10_000


def _rm_static(hh_source: Path) -> dict[str, pd.DataFrame]:
    pairs, _ = to_preference_pairs(read_jsonl(hh_source), str(hh_source))
    rows = pd.DataFrame([{"prompt": p.prompt, "response": p.chosen, "chosen": p.chosen, "rejected": p.rejected}
                         for p in pairs])
    held_out = rows["prompt"].map(_in_mirror_test_split)
    return {"train": rows[~held_out].reset_index(drop=True), "test": rows[held_out].reset_index(drop=True)}


def _rtp_lines(rtp_dir: Path) -> list[str]:
    lines: list[str] = []
    for path in sorted(rtp_dir.glob("*.jsonl*")):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as handle:
            lines.extend(line.rstrip("\n") for line in handle if line.strip())
    return lines


PYTHIA_160M_DIMENSIONS = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                          "intermediate_size": 3072, "vocab_size": 50304}  # EleutherAI/pythia-160m's config.json


def build_hub_mirror(root: Path, *, hh_source: Path, rtp_dir: Path, log: Callable[[str], None] = print,
                     real_dimensions: bool = False) -> dict:
    """Write the mirror under `root` (idempotent: an existing complete mirror is kept) and return its record.

    `real_dimensions` gives `EleutherAI/pythia-160m` its real shape (768 wide, 12 layers, 50,304-row embedding;
    random weights), for measuring the `small` graph's memory on a GPU (scripts/gpu_check.sh)."""
    ready = root / READY_FILE
    if ready.exists():
        return json.loads(ready.read_text())
    hub = HubCacheWriter(root / "hub")
    splits = _rm_static(hh_source)
    texts = [t for frame in splits.values() for t in (frame["prompt"] + frame["chosen"]).tolist()]
    commits: dict[str, str] = {}

    def rm_static(folder: Path) -> None:
        for split, name in RM_STATIC_FILES.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            splits[split].to_parquet(folder / name, index=False)
        (folder / "README.md").write_text("Miniature of Dahoas/rm-static from Anthropic HH harmless-base pairs.\n")

    commits["datasets/Dahoas/rm-static"] = hub.write("dataset", "Dahoas/rm-static", rm_static)
    log(f"mirror: Dahoas/rm-static ({len(splits['train'])} train, {len(splits['test'])} test pairs)")

    def rtp(folder: Path) -> None:
        (folder / "prompts.jsonl").write_text("\n".join(_rtp_lines(rtp_dir)) + "\n")

    commits["datasets/allenai/real-toxicity-prompts"] = hub.write("dataset", "allenai/real-toxicity-prompts", rtp)

    gptj_tokenizer = _gpt_tokenizer(texts, pad=False)
    gptj = _gptj(gptj_tokenizer, seed=0)

    def gpt_j(folder: Path) -> None:
        gptj.config.save_pretrained(folder)
        torch.save(gptj.state_dict(), folder / "pytorch_model.bin")
        gptj_tokenizer.save_pretrained(folder)

    commits["models/EleutherAI/gpt-j-6b"] = hub.write("model", "EleutherAI/gpt-j-6b", gpt_j)

    def gptj_rm_static(folder: Path) -> None:
        trunk = _gptj(gptj_tokenizer, seed=1).transformer
        state = {f"transformer.{k}": v for k, v in trunk.state_dict().items()}
        state["v_head.weight"] = torch.randn(1, trunk.config.n_embd, generator=torch.Generator().manual_seed(2))
        torch.save(state, folder / "hf_ckpt.pt")

    commits["models/Dahoas/gptj-rm-static"] = hub.write("model", "Dahoas/gptj-rm-static", gptj_rm_static)
    log("mirror: EleutherAI/gpt-j-6b and Dahoas/gptj-rm-static (random GPT-J, 64 wide, 2 layers)")

    pythia_tokenizer = _gpt_tokenizer(texts, pad=False)

    def pythia(folder: Path) -> None:
        torch.manual_seed(3)
        shape = PYTHIA_160M_DIMENSIONS if real_dimensions else {
            "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 256,
            "vocab_size": len(pythia_tokenizer)}
        config = GPTNeoXConfig(**shape, max_position_embeddings=2048, rotary_pct=0.25, use_parallel_residual=True,
                               tie_word_embeddings=False, bos_token_id=pythia_tokenizer.eos_token_id,
                               eos_token_id=pythia_tokenizer.eos_token_id)
        GPTNeoXForCausalLM(config).save_pretrained(folder, safe_serialization=True)
        pythia_tokenizer.save_pretrained(folder)

    commits["models/EleutherAI/pythia-160m"] = hub.write("model", "EleutherAI/pythia-160m", pythia)
    log(f"mirror: EleutherAI/pythia-160m (random GPT-NeoX, {'real dimensions' if real_dimensions else '64 wide'})")

    bert_tokenizer = standin_tokenizer(texts[:500], vocab_size=1000, max_length=128)
    torch.manual_seed(4)
    bert = BertForSequenceClassification(BertConfig(
        vocab_size=len(bert_tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=512, num_labels=len(ORIGINAL_CLASSES)))

    def bert_base_uncased(folder: Path) -> None:
        bert.config.save_pretrained(folder)
        bert_tokenizer.save_pretrained(folder)

    commits["models/bert-base-uncased"] = hub.write("model", "bert-base-uncased", bert_base_uncased)
    checkpoints = root / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    torch.save({"config": {"arch": {"args": {"model_type": "bert-base-uncased",
                                             "model_name": "BertForSequenceClassification",
                                             "tokenizer_name": "BertTokenizer",
                                             "num_classes": len(ORIGINAL_CLASSES)}},
                           "dataset": {"args": {"classes": list(ORIGINAL_CLASSES)}}},
                "state_dict": bert.state_dict()}, checkpoints / DETOXIFY_ORIGINAL_FILE)
    log("mirror: Detoxify original (random BERT, 32 wide) and bert-base-uncased")
    record = {"commits": commits, "hh_source": str(hh_source), "rtp_dir": str(rtp_dir),
              "real_dimensions": real_dimensions}
    ready.write_text(json.dumps(record, indent=2))
    return record
