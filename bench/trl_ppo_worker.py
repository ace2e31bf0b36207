"""TRL 1.12.0's experimental PPOTrainer on the tiny preset's SFT and reward models (runs in its own venv).

Invoked by `bench/ppo_vs_trl.py` with the TRL 1.12 virtual environment's Python; imports nothing from
rlhf_assets (that venv does not have it). Prints one JSON line with timing, reward and memory figures.
"""

import json
import resource
import sys
import tempfile
import time

import pandas as pd
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
from trl.experimental.ppo import PPOConfig, PPOTrainer


class ScoreLog(TrainerCallback):
    def __init__(self) -> None:
        self.scores: list[float] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "objective/scores" in logs:
            self.scores.append(float(logs["objective/scores"]))


def main() -> None:
    """Run TRL 1.12 PPO with the bench spec from argv and print one JSON line of figures."""
    spec = json.loads(sys.argv[1])
    torch.manual_seed(spec["seed"])
    tokenizer = AutoTokenizer.from_pretrained(spec["sft_dir"], padding_side="left")
    prompts = pd.read_parquet(spec["train_parquet"])["prompt"].drop_duplicates().tolist()
    ids = [row[-spec["prompt_tokens"]:] for row in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    dataset = Dataset.from_dict({"input_ids": ids})
    batch = spec["batch_size"]
    with tempfile.TemporaryDirectory() as out:
        args = PPOConfig(
            output_dir=out, per_device_train_batch_size=batch, gradient_accumulation_steps=1,
            num_mini_batches=spec["num_mini_batches"], num_ppo_epochs=spec["ppo_epochs"],
            total_episodes=spec["episodes"], response_length=spec["response_length"], stop_token="eos",
            learning_rate=spec["learning_rate"], kl_coef=spec["kl_coef"], temperature=1.0,
            local_rollout_forward_batch_size=batch, num_sample_generations=0, report_to=[], use_cpu=True,
            logging_steps=1, save_strategy="no", seed=spec["seed"], missing_eos_penalty=None, disable_tqdm=True,
        )
        scores = ScoreLog()
        trainer = PPOTrainer(
            args=args, processing_class=tokenizer,
            model=AutoModelForCausalLM.from_pretrained(spec["sft_dir"]),
            ref_model=AutoModelForCausalLM.from_pretrained(spec["sft_dir"]),
            reward_model=AutoModelForSequenceClassification.from_pretrained(spec["rm_dir"]),
            value_model=AutoModelForSequenceClassification.from_pretrained(spec["rm_dir"]),
            train_dataset=dataset, callbacks=[scores],
        )
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "episodes": spec["episodes"], "scores": scores.scores,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


if __name__ == "__main__":
    main()
