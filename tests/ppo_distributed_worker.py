"""One rank of a PPO run on a tiny random GPT-NeoX with a toy reward, for `accelerate launch`.

`tests/process/test_ppo_distributed.py` launches it with 2 CPU processes; `scripts/gpu_check.sh` with bf16 and with
DeepSpeed ZeRO-2 on a GPU. Each rank writes what it saw to `<out>/rank-<i>.json`.
"""

import argparse
import json
from pathlib import Path

import torch

from rlhf_assets.ppo.config import PPOConfig
from rlhf_assets.ppo.trainer import PPOTrainer, default_accelerator
from rlhf_assets.ppo.value_head import CausalLMWithValueHead
from tests.ppo_toys import CharTokenizer, tiny_neox

PROMPTS = [[2 + (i * 7 + j) % 30 for j in range(3 + i % 4)] for i in range(16)]


def share_of_k(indices: list[int], texts: list[str]) -> torch.Tensor:
    """Reward: the share of 'K' in the response (a target the policy can learn quickly)."""
    return torch.tensor([t.count("K") / max(len(t), 1) for t in texts])


class RecordingTrainer(PPOTrainer):
    """Remembers which prompts this rank sampled."""

    seen: list[int]

    def _next_prompts(self, count: int) -> list[int]:
        chosen = super()._next_prompts(count)
        self.seen = [*getattr(self, "seen", []), *chosen]
        return chosen


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--total-steps", type=int, default=4)
    args = parser.parse_args()
    accelerator = default_accelerator()
    config = PPOConfig(seq_length=24, max_new_tokens=6, batch_size=2, num_rollouts=4, chunk_size=2, ppo_epochs=1,
                       total_steps=args.total_steps, checkpoint_interval=2, stop_sequences=(), learning_rate=1e-2,
                       lr_min=1e-3, num_layers_unfrozen=-1)
    reward = share_of_k if accelerator.is_main_process else None
    trainer = RecordingTrainer(config, CausalLMWithValueHead(tiny_neox()), tiny_neox(), CharTokenizer(), PROMPTS,
                               reward, args.checkpoint_dir, log=print, accelerator=accelerator)
    history = trainer.train()
    weights = accelerator.unwrap_model(trainer.policy).state_dict()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"rank-{accelerator.process_index}.json").write_text(json.dumps({
        "world_size": accelerator.num_processes,
        "device": str(accelerator.device),
        "mixed_precision": accelerator.mixed_precision,
        "distributed_type": str(accelerator.distributed_type),
        "prompts": getattr(trainer, "seen", []),
        "step": trainer.step,
        "resumed_from": history.resumed_from,
        "kl_coef": trainer.kl_controller.value,
        "scores": [s["score_mean"] for s in history.steps],
        "weights_sum": sum(float(v.double().abs().sum()) for v in weights.values()),
        "weights": {k: v.float().flatten()[:8].tolist() for k, v in weights.items()},
    }))
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main()
