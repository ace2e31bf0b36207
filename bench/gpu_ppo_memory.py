"""Measured GPU memory of our PPO beside the memory plan: a GPT-J-architecture model with few layers (random
weights), the gptj_6b preset's PPO settings, a few steps under the launch it is given (scripts/gpu_check.sh uses
the preset's DeepSpeed ZeRO-2 bf16 accelerate config on one GPU).

Peaks are read per phase (generation, rollout forward, training step) with `torch.cuda.max_memory_allocated`,
next to the plan's terms for the same phase, so a gap points at the term that is off.

    accelerate launch --config_file rlhf_assets/compute/accelerate/zero2_bf16.yaml --num_processes 1 \\
        -m bench.gpu_ppo_memory --reference hydra --out var/gpu/hydra.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from transformers import GPTJConfig, GPTJForCausalLM

from rlhf_assets.compute.memory_plan import GIB, ModelShape, Precision, gpu_capacity, ppo_plan
from rlhf_assets.ppo import trainer as trainer_module
from rlhf_assets.ppo.trainer import PPOTrainer
from rlhf_assets.ppo.value_head import CausalLMWithValueHead, freeze_bottom_layers
from rlhf_assets.presets import get_preset


class NumberTokenizer:
    """Ids are their own text (one letter per id): enough for sampling and a text reward, any vocabulary."""

    pad_token_id, eos_token_id = 0, 1

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return "".join(chr(0x4E00 + i) for i in ids if i > 1)

    def batch_decode(self, rows: list[list[int]], skip_special_tokens: bool = True) -> list[str]:
        return [self.decode(r) for r in rows]

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": [ord(c) - 0x4E00 for c in text]}


def even_share(indices: list[int], texts: list[str]) -> torch.Tensor:
    """A toy reward the policy can move: the share of even ids in the response."""
    return torch.tensor([sum(ord(c) % 2 == 0 for c in t) / max(len(t), 1) for t in texts])


def peak_of(name: str, peaks: dict[str, float], function: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap `function` so each call's peak allocated memory (GiB) raises `peaks[name]`."""
    def measured(*args: Any, **kwargs: Any) -> Any:
        if not torch.cuda.is_available():  # a CPU smoke run: nothing to measure
            return function(*args, **kwargs)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        result = function(*args, **kwargs)
        torch.cuda.synchronize()
        peaks[name] = max(peaks.get(name, 0.0), torch.cuda.max_memory_allocated() / GIB)
        return result
    return measured


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reference", choices=("hydra", "full"), default="hydra")
    parser.add_argument("--layers", type=int, default=4, help="GPT-J blocks (4: about 1.2 B parameters)")
    parser.add_argument("--total-steps", type=int, default=8)
    parser.add_argument("--n-embd", type=int, default=4096, help="Width (GPT-J-6B: 4096; smaller for a CPU smoke run)")
    parser.add_argument("--seq-length", type=int, default=None, help="Override the preset's 1,024 (smoke runs)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    accelerator = Accelerator()
    preset = get_preset("gptj_6b").ppo.config
    update = {"total_steps": args.total_steps, "checkpoint_interval": 10**9,
              "hydra_reference": args.reference == "hydra", "stop_sequences": ()}
    if args.seq_length:
        update |= {"seq_length": args.seq_length, "max_new_tokens": args.seq_length // 8}
    config = preset.model_copy(update=update)
    model_config = GPTJConfig(n_layer=args.layers, n_embd=args.n_embd, n_head=16,
                              rotary_dim=min(64, args.n_embd // 16), pad_token_id=0, eos_token_id=1, bos_token_id=1)
    torch.manual_seed(0)
    model = GPTJForCausalLM(model_config)
    freeze_bottom_layers(model, config.num_layers_unfrozen)
    reference = None
    if config.reference_kind == "full_copy":
        reference = GPTJForCausalLM(model_config)
        reference.load_state_dict(model.state_dict())
    prompts = [[2 + (17 * i + 31 * j) % 50000 for j in range(config.prompt_budget)] for i in range(256)]
    plan = ppo_plan(ModelShape.from_config(model_config), config, Precision.from_environment(),
                    accelerator.num_processes, None, reward_batch_size=8, reward_on_own_gpu=True,
                    gpu=gpu_capacity(None))
    with tempfile.TemporaryDirectory() as checkpoints:
        trainer = PPOTrainer(config, CausalLMWithValueHead(model), reference, NumberTokenizer(), prompts,
                             even_share, Path(checkpoints), log=print, accelerator=accelerator)
        del model, reference
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.empty_cache()
        peaks: dict[str, float] = {}
        trainer_module.sample_responses = peak_of("generation", peaks, trainer_module.sample_responses)
        trainer._forward_old = peak_of("rollout forward", peaks, trainer._forward_old)
        trainer._update = peak_of("training", peaks, trainer._update)
        held_before = torch.cuda.memory_allocated() / GIB if cuda else 0.0
        started = time.perf_counter()
        history = trainer.train().steps
        seconds = time.perf_counter() - started
        overall = max(peaks.values(), default=0.0)
        held_after = torch.cuda.memory_allocated() / GIB if cuda else 0.0
    held_plan = sum(t.bytes for t in plan.terms if t.phase == "held") / GIB
    phases = {phase: gib for phase, gib in plan.phase_gib().items() if phase in peaks}
    report = {
        "reference": args.reference, "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "precision": plan.setup,
        "parameters": sum(p.numel() for p in trainer.policy.parameters()),
        "plan_rank_gib": max(phases.values(), default=plan.rank_gib), "measured_peak_gib": overall,
        "ratio_measured_to_plan": overall / max(phases.values(), default=plan.rank_gib),
        "held_plan_gib": held_plan, "held_measured_after_prepare_gib": held_before,
        "held_measured_after_training_gib": held_after,
        "phases": {p: {"plan_gib": phases[p], "measured_peak_gib": peaks.get(p)} for p in phases},
        "samples_per_second": config.num_rollouts * accelerator.num_processes / seconds, "seconds": seconds,
        "steps": len(history), "plan": plan.lines(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "plan"}, indent=2))


if __name__ == "__main__":
    main()
