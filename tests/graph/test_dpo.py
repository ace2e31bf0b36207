"""The DPO policy: TRL's DPOTrainer run as a step program, checked against an independent computation of its
implicit reward, resumed from a checkpoint, and materialized in the tiny graph."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from dagster import AssetKey
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from rlhf_assets.modeling.base import build_tiny_gpt_neox, write_pointer
from rlhf_assets.presets import TINY
from rlhf_assets.steps.dpo import preference_texts
from rlhf_assets.steps.generation import load_policy
from tests.conftest import artifact_dir
from tests.process.test_steps import preference_dir, run_step, tokenizer  # noqa: F401  (module fixtures)

pytestmark = pytest.mark.graph

SPEC = TINY.dpo.model_copy(update={"max_train_rows": 64, "eval_rows": 24, "max_length": 96,
                                   "max_response_tokens": 32, "save_steps": 2, "logging_steps": 1})


@pytest.fixture(scope="module")
def sft_dir(tmp_path_factory, tokenizer) -> Path:  # noqa: F811
    """A small policy standing in for the SFT checkpoint (the step only needs a causal LM and its tokenizer)."""
    directory = tmp_path_factory.mktemp("sft")
    model = build_tiny_gpt_neox(tokenizer, num_layers=1, hidden_size=32, num_heads=2, max_position_embeddings=256,
                                seed=0)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    write_pointer(directory, "local", "sft", sum(p.numel() for p in model.parameters()))
    return directory


def _sequence_logprob(model, prompt_ids: list[int], response_ids: list[int]) -> float:
    ids = torch.tensor([prompt_ids + response_ids])
    with torch.no_grad():
        logprobs = model(ids).logits[0, :-1].log_softmax(-1)
    targets = ids[0, 1:]
    return float(logprobs.gather(-1, targets[:, None])[len(prompt_ids) - 1:].sum())


def _implicit_reward_accuracy(policy_dir: Path, sft: Path, tok, frame: pd.DataFrame) -> float:
    """Share of pairs where β·(log π − log π_ref) ranks chosen above rejected, computed here, not by TRL."""
    policy = AutoModelForCausalLM.from_pretrained(policy_dir).eval()
    reference = AutoModelForCausalLM.from_pretrained(sft).eval()
    texts = preference_texts(frame, tok, SPEC)
    correct = 0
    for row in texts:
        prompt_ids = tok(row["prompt"])["input_ids"]
        rewards = []
        for response in (row["chosen"], row["rejected"]):
            full = tok(row["prompt"] + response + tok.eos_token)["input_ids"]
            pairs = enumerate(zip(prompt_ids, full, strict=False))
            shared = next((i for i, (a, b) in pairs if a != b), len(prompt_ids))
            prompt, completion = full[:shared], full[shared:]
            rewards.append(_sequence_logprob(policy, prompt, completion) -
                           _sequence_logprob(reference, prompt, completion))
        correct += rewards[0] > rewards[1]
    return correct / len(texts)


def test_dpo_step_matches_an_independent_implicit_reward_and_resumes(
        tmp_path: Path, sft_dir: Path, tokenizer, preference_dir: Path) -> None:  # noqa: F811
    channels = {"sft_model": sft_dir, "preference_dataset": preference_dir}
    first = run_step("dpo", {"dpo": SPEC.model_dump()}, tmp_path / "first", channels, warm=True)
    assert first.returncode == 0, first.stderr[-3000:]
    report = json.loads(first.stdout[first.stdout.index("{"):])
    assert next(iter(report)) == "summary" and "held-out preference accuracy" in report["summary"]["raw_value"]
    assert report["train_rows"] == 64 and report["eval_pairs"] == 24 and report["global_steps"] == 4
    assert report["eval_accuracy_ci_low"] <= report["eval_accuracy"] <= report["eval_accuracy_ci_high"]
    assert "rewards/accuracies" in report["reward_curves"]["raw_value"]
    model_dir = tmp_path / "first" / "model"
    policy, _ = load_policy(model_dir)  # a policy artifact the evaluation steps can load
    assert policy.config.vocab_size == len(tokenizer)

    held_out = pd.read_parquet(preference_dir / "test.parquet").head(SPEC.eval_rows)
    ours = _implicit_reward_accuracy(model_dir, sft_dir, tokenizer, held_out)
    assert abs(ours - report["eval_accuracy"]) <= 1 / SPEC.eval_rows + 1e-9, (ours, report["eval_accuracy"])

    # A job restarted after step 2 (its checkpoint-4 lost) resumes there and trains only steps 3-4. Not bit for bit:
    # after Trainer's resume the weights differ from the straight run's by about one step's update (README).
    checkpoints = tmp_path / "first" / "checkpoints"
    resumed_checkpoints = tmp_path / "resumed" / "checkpoints"
    shutil.copytree(checkpoints, resumed_checkpoints)
    shutil.rmtree(resumed_checkpoints / "checkpoint-4")
    resumed = run_step("dpo", {"dpo": SPEC.model_dump()}, tmp_path / "resumed", channels, warm=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stderr and "checkpoint-2" in resumed.stderr
    assert "step 3/4" in resumed.stderr and "step 1/4" not in resumed.stderr
    straight = load_file(str(model_dir / "model.safetensors"))
    again = load_file(str(tmp_path / "resumed" / "model" / "model.safetensors"))
    at_step_2 = load_file(str(checkpoints / "checkpoint-2" / "model.safetensors"))

    def distance(a: dict, b: dict) -> float:
        return max(float((a[k] - b[k]).abs().max()) for k in a)

    assert straight.keys() == again.keys()
    assert distance(again, at_step_2) > 0, "the resumed run did not train on"
    assert distance(again, straight) < 2 * SPEC.learning_rate, "further from the straight run than two Adam steps"


def test_dpo_policy_materializes_in_the_tiny_graph(graph) -> None:
    root, instance, _ = graph
    event = instance.get_latest_materialization_event(AssetKey("dpo_policy")).asset_materialization
    metadata = event.metadata
    assert next(iter(metadata)) == "summary"
    assert metadata["eval_pairs"].value == 243 and metadata["train_rows"].value == 640
    assert 0.0 <= metadata["eval_accuracy_ci_low"].value <= metadata["eval_accuracy"].value
    assert "Implicit reward" in metadata["reward_curves"].value
    model, _ = load_policy(artifact_dir(instance, root, "dpo_policy"))
    assert sum(p.numel() for p in model.parameters()) > 1_000_000
