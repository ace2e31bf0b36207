"""Step programs run by hand (no Dagster), under the emulated SageMaker container contract."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from transformers import GPTJConfig, GPTJForCausalLM

from rlhf_assets.data.hh import read_jsonl, to_preference_pairs
from rlhf_assets.data.split import split_pairs
from rlhf_assets.modeling.base import build_tiny_gpt_neox
from rlhf_assets.modeling.encoding import encode_prompt_response
from rlhf_assets.modeling.tokenizer import train_bpe_tokenizer
from rlhf_assets.presets import TINY
from rlhf_assets.steps.runtime import EXIT_BAD_INPUT

pytestmark = pytest.mark.process


@pytest.fixture(scope="module")
def preference_dir(tmp_path_factory, shared_hh_path: Path) -> Path:
    directory = tmp_path_factory.mktemp("preference")
    pairs, _ = to_preference_pairs(read_jsonl(shared_hh_path), str(shared_hh_path))
    train, test = split_pairs(pairs, 0.1)
    pd.DataFrame([p.as_row() for p in train]).to_parquet(directory / "train.parquet")
    pd.DataFrame([p.as_row() for p in test]).to_parquet(directory / "test.parquet")
    return directory


@pytest.fixture(scope="module")
def tokenizer(preference_dir: Path):
    frame = pd.read_parquet(preference_dir / "train.parquet").head(300)
    return train_bpe_tokenizer(list(frame["prompt"] + frame["chosen"]), vocab_size=512)


def run_step(step: str, config: dict, tmp: Path, channels: dict[str, Path], *,
             warm: bool = False) -> subprocess.CompletedProcess:
    """The step by hand under the container contract: `python -m rlhf_assets.steps.<step>`, or (`warm`) through
    the warm worker's client as the local backend launches it."""
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "config.json").write_text(json.dumps(config))
    env = {**os.environ, "SM_MODEL_DIR": str(tmp / "model"), "RLHF_CHECKPOINT_DIR": str(tmp / "checkpoints"),
           "SM_OUTPUT_DATA_DIR": str(tmp / "output" / "data")}
    env.update({f"SM_CHANNEL_{name.upper()}": str(path) for name, path in channels.items()})
    (tmp / "model").mkdir(exist_ok=True)
    launcher = ["-m", "rlhf_assets.compute.warm.client"] if warm else ["-m"]
    command = [sys.executable, *launcher, f"rlhf_assets.steps.{step}", "--request", str(tmp / "config.json")]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


def test_encoding_keeps_the_response_and_cuts_the_prompt_from_the_left(tokenizer) -> None:
    prompt = "\n\nHuman: " + "long question " * 100 + "\n\nAssistant:"
    pair = encode_prompt_response(tokenizer, prompt, " short answer", max_length=32, max_response_tokens=8)
    assert len(pair.input_ids) == 32
    assert pair.input_ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(pair.input_ids).endswith("Assistant: short answer<|endoftext|>")
    assert sum(pair.completion_mask) == len(tokenizer(" short answer")["input_ids"]) + 1


def test_hub_base_model_from_a_local_directory_then_sft(tmp_path: Path, tokenizer, preference_dir: Path) -> None:
    hub_dir = tmp_path / "hub-model"
    build_tiny_gpt_neox(tokenizer, num_layers=1, hidden_size=32, num_heads=2, max_position_embeddings=256,
                        seed=0).save_pretrained(hub_dir)
    tokenizer.save_pretrained(hub_dir)
    base_spec = TINY.base_model.model_copy(update={"hub_id": str(hub_dir)}).model_dump()
    base = run_step("base_model", {"base_model": base_spec}, tmp_path / "base", {})
    assert base.returncode == 0, base.stderr
    pointer = json.loads((tmp_path / "base" / "model" / "base_model.json").read_text())
    assert pointer["kind"] == "hub" and pointer["source"] == str(hub_dir)
    assert not (tmp_path / "base" / "model" / "model.safetensors").exists(), "hub weights are not copied"

    spec = TINY.sft.model_copy(update={"max_train_rows": 32, "eval_rows": 16, "max_length": 64}).model_dump()
    sft = run_step("sft", {"train": spec}, tmp_path / "sft",
                   {"base_model": tmp_path / "base" / "model", "preference_dataset": preference_dir})
    assert sft.returncode == 0, sft.stderr
    report = json.loads(sft.stdout[sft.stdout.index("{"):])
    assert report["train_rows"] == 32 and report["eval_perplexity"] > 1
    assert (tmp_path / "sft" / "model" / "model.safetensors").exists()
    assert "step 2/2" in sft.stderr, "progress is logged per Trainer log step"


def test_pretrained_trlx_reward_model_through_the_reward_step(tmp_path: Path, tokenizer, preference_dir) -> None:
    torch.manual_seed(0)
    trunk_dir = tmp_path / "gpt-j-tiny"
    causal = GPTJForCausalLM(GPTJConfig(vocab_size=len(tokenizer), n_positions=128, n_embd=32, n_layer=1,
                                        n_head=4, rotary_dim=4, bos_token_id=tokenizer.eos_token_id,
                                        eos_token_id=tokenizer.eos_token_id))
    causal.save_pretrained(trunk_dir)
    tokenizer.save_pretrained(trunk_dir)
    rm_dir = tmp_path / "gptj-rm-static"
    rm_dir.mkdir()
    state = {f"transformer.{k}": v for k, v in causal.transformer.state_dict().items()}
    torch.save({**state, "v_head.weight": torch.randn(1, 32)}, rm_dir / "pytorch_model.bin")
    spec = TINY.reward.model_copy(update={"mode": "pretrained", "pretrained_id": str(rm_dir),
                                          "pretrained_trunk": str(trunk_dir), "eval_rows": 20, "max_length": 96})
    result = run_step("reward", {"reward": spec.model_dump()}, tmp_path / "rm",
                      {"preference_dataset": preference_dir, "sft_model": trunk_dir})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout[result.stdout.index("{"):])
    assert report["mode"] == "pretrained" and report["eval_pairs"] == 20 and 0 <= report["eval_accuracy"] <= 1
    info = json.loads((tmp_path / "rm" / "model" / "reward_model.json").read_text())
    assert info["mode"] == "pretrained" and info["max_length"] == 96
    assert info["readout"]["rule"] == "eos" and info["readout"]["eos_token_id"] == tokenizer.eos_token_id


def test_missing_channel_exits_2_with_the_reason(tmp_path: Path) -> None:
    result = run_step("sft", {"train": TINY.sft.model_dump()}, tmp_path, {})
    assert result.returncode == EXIT_BAD_INPUT
    assert "input channel 'base_model' is missing" in result.stderr
    assert "input channel 'base_model' is missing" in (tmp_path / "output" / "failure").read_text()


def test_a_step_forked_by_the_warm_worker_trains_the_same_bytes_as_a_plain_process(tmp_path: Path, tokenizer,
                                                                                   preference_dir: Path) -> None:
    """The worker's children start with the worker's imports, allocator and thread state: SFT trained there and in a
    fresh interpreter must write byte-identical weights (the whole tiny graph is compared in test_graph_tiny)."""
    base_dir = tmp_path / "base"
    build_tiny_gpt_neox(tokenizer, num_layers=1, hidden_size=32, num_heads=2, max_position_embeddings=256,
                        seed=0).save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    base_spec = TINY.base_model.model_copy(update={"hub_id": str(base_dir)}).model_dump()
    assert run_step("base_model", {"base_model": base_spec}, tmp_path / "pointer", {}, warm=True).returncode == 0
    spec = TINY.sft.model_copy(update={"max_train_rows": 96, "eval_rows": 16, "max_length": 64}).model_dump()
    channels = {"base_model": tmp_path / "pointer" / "model", "preference_dataset": preference_dir}
    runs = {warm: run_step("sft", {"train": spec}, tmp_path / f"sft-{warm}", channels, warm=warm)
            for warm in (False, True)}
    assert all(run.returncode == 0 for run in runs.values()), runs[True].stderr[-2000:] + runs[False].stderr[-2000:]
    assert "warm worker unavailable" not in runs[True].stderr
    weights = {warm: (tmp_path / f"sft-{warm}" / "model" / "model.safetensors").read_bytes() for warm in runs}
    assert weights[True] == weights[False]
