"""A preset's memory plans, printed: `python -m rlhf_assets.compute.preset_memory gptj_6b --model-type gptj`.

Kept apart from `memory_plan.py`, which the steps import: this module reads the preset values, which no step's
code version should cover.
"""

from __future__ import annotations

from rlhf_assets.compute.memory_plan import (
    INSTANCE_GPUS,
    MemoryPlan,
    ModelShape,
    Precision,
    finetune_plan,
    gpu_capacity,
    ppo_plan,
)
from rlhf_assets.presets import PROJECT_ROOT, get_preset


def preset_plans(preset_name: str, model_config: object) -> list[MemoryPlan]:
    """The SFT and PPO plans of a preset on its own instance type (the reward model shares the policy's shape)."""
    preset = get_preset(preset_name)
    compute = preset.compute
    precision = Precision.from_accelerate_config(
        PROJECT_ROOT / compute.accelerate_config if compute.accelerate_config else None)
    gpu = gpu_capacity(compute.instance_type) if compute.instance_type in INSTANCE_GPUS \
        else (None, compute.instance_type)
    shape = ModelShape.from_config(model_config)
    ranks = compute.num_processes * compute.instance_count
    sft = finetune_plan("sft_model", shape, precision, ranks, batch_size=preset.sft.batch_size,
                        max_length=preset.sft.max_length, sequences_per_row=1, language_model_head=True, gpu=gpu)
    ppo = ppo_plan(shape, preset.ppo.config, precision, (compute.num_processes - compute.reward_model_gpus)
                   * compute.instance_count, ModelShape.from_config(model_config, classifier=True),
                   reward_batch_size=preset.ppo.reward_batch_size, reward_on_own_gpu=compute.reward_model_gpus > 0,
                   gpu=gpu)
    return [sft, ppo]


def main() -> None:
    """Print a preset's memory plans: `python -m rlhf_assets.compute.preset_memory gptj_6b [--model-type gptj]`."""
    import argparse

    from transformers import AutoConfig

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("preset")
    parser.add_argument("--model-type", help="Use this architecture's default config (gptj: GPT-J-6B) instead of "
                        "downloading the preset's base model config")
    args = parser.parse_args()
    config = AutoConfig.for_model(args.model_type) if args.model_type \
        else AutoConfig.from_pretrained(get_preset(args.preset).base_model.hub_id)
    config.num_labels = 1
    for plan in preset_plans(args.preset, config):
        print("\n".join(plan.lines()), end="\n\n")


if __name__ == "__main__":
    main()
