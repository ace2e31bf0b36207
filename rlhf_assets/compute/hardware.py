"""What each step program needs to run on, so light steps never start a GPU instance.

A preset names three machines (`ComputeSpec`): the training instance (the recipe's 8-GPU p4d, `num_processes`
ranks under accelerate), a single-GPU instance for sampling and scoring, and a CPU instance for steps that only
move bytes or fit tokenizers. Which one a step gets is a property of the step, declared here once, so a new step
without a declaration fails its test instead of silently renting eight A100s to write a tokenizer.
"""

from __future__ import annotations

from enum import Enum


class Hardware(Enum):
    """The kind of machine a step needs."""

    CPU = "cpu"  # data movement, tokenizer fitting, the tiny stand-in classifier
    GPU = "gpu"  # one process on one GPU: sampling, reward/judge/toxicity scoring
    TRAINING = "training"  # the training instance with every rank (accelerate, ZeRO-2 on the recipe)


STEP_HARDWARE: dict[str, Hardware] = {
    "hub_snapshot": Hardware.CPU,
    "base_model": Hardware.CPU,
    "toxicity_model": Hardware.CPU,
    "sft": Hardware.TRAINING,
    "reward": Hardware.TRAINING,
    "ppo": Hardware.TRAINING,
    "dpo": Hardware.TRAINING,
    "sft_responses": Hardware.GPU,
    "eval_responses": Hardware.GPU,
    "sft_toxicity": Hardware.GPU,
    "toxicity_scores": Hardware.GPU,
    "auto_preference": Hardware.GPU,
    "overoptimisation": Hardware.GPU,
}

GPU_INSTANCE_FAMILIES = ("ml.p", "ml.g", "ml.trn", "ml.inf")
# The steps that stage what comes from outside (hub snapshots, Detoxify's published checkpoint); every other step
# reads artifacts only, and a SageMaker job of one runs with the hub switched off.
REACHES_OUTSIDE = frozenset({"hub_snapshot", "toxicity_model"})


def step_hardware(step: str) -> Hardware:
    """The declared hardware of `step`, refusing an undeclared step by name."""
    try:
        return STEP_HARDWARE[step]
    except KeyError:
        raise KeyError(f"step {step!r} declares no hardware: add it to rlhf_assets/compute/hardware.py") from None


def is_gpu_instance(instance_type: str) -> bool:
    """Whether a SageMaker instance type has accelerators (p, g, trn, inf families); `local` has none."""
    return instance_type.startswith(GPU_INSTANCE_FAMILIES)
