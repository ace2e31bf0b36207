"""Our PPO on the tiny preset's SFT and reward models with the settings `bench/ppo_vs_trl.py` gives it.

Prints one JSON line with timing, reward and memory figures, like `trl_ppo_worker.py`.
"""

import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from rlhf_assets.modeling.reward_model import RewardModelScorer, eos_readout
from rlhf_assets.ppo.config import PPOConfig
from rlhf_assets.ppo.rewards import DeltaReward
from rlhf_assets.ppo.trainer import PPOTrainer
from rlhf_assets.ppo.value_head import CausalLMWithValueHead, freeze_bottom_layers


def main() -> None:
    """Run our PPO with the bench spec from argv and print one JSON line of figures."""
    spec = json.loads(sys.argv[1])
    torch.manual_seed(spec["seed"])
    tokenizer = AutoTokenizer.from_pretrained(spec["sft_dir"], padding_side="left")
    prompts = pd.read_parquet(spec["train_parquet"])["prompt"].drop_duplicates().tolist()
    ids = [row[-spec["prompt_tokens"]:] for row in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    batch, minibatches = spec["batch_size"], spec["num_mini_batches"]
    updates = spec["episodes"] // batch
    config = PPOConfig(
        seq_length=spec["prompt_tokens"] + spec["response_length"], max_new_tokens=spec["response_length"],
        batch_size=batch // minibatches, num_rollouts=batch, chunk_size=batch, ppo_epochs=spec["ppo_epochs"],
        total_steps=updates * spec["ppo_epochs"] * minibatches, num_layers_unfrozen=spec.get("num_layers_unfrozen", -1),
        hydra_reference=spec.get("hydra_reference", True),
        learning_rate=spec["learning_rate"], lr_min=spec["learning_rate"] / 10, init_kl_coef=spec["kl_coef"],
        target=None, delta_reward=False, stop_sequences=(), checkpoint_interval=10**9, seed=spec["seed"],
    )
    rm_tokenizer = AutoTokenizer.from_pretrained(spec["rm_dir"])
    scorer = RewardModelScorer(AutoModelForSequenceClassification.from_pretrained(spec["rm_dir"]), rm_tokenizer,
                               readout=eos_readout(rm_tokenizer.eos_token_id), max_length=config.seq_length,
                               max_response_tokens=config.max_new_tokens)
    texts = tokenizer.batch_decode(ids)
    with tempfile.TemporaryDirectory() as out:
        policy = AutoModelForCausalLM.from_pretrained(spec["sft_dir"])
        freeze_bottom_layers(policy, config.num_layers_unfrozen)
        reference = AutoModelForCausalLM.from_pretrained(spec["sft_dir"]) \
            if config.reference_kind == "full_copy" else None
        trainer = PPOTrainer(config, CausalLMWithValueHead(policy), reference, tokenizer, ids,
                             DeltaReward(scorer, texts, None), Path(out), log=lambda _: None)
        started = time.perf_counter()
        history = trainer.train().steps
        seconds = time.perf_counter() - started
    per_update = [h["score_mean"] for h in history[:: spec["ppo_epochs"] * minibatches]]
    print(json.dumps({"seconds": seconds, "episodes": updates * batch, "scores": per_update,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


if __name__ == "__main__":
    main()
