"""The memory plan inside a GPU step: shown in its first log lines and metadata, refused before weights load."""

from __future__ import annotations

import os

from rlhf_assets.compute.memory_plan import MemoryPlan, MemoryPlanError, gpu_capacity
from rlhf_assets.steps.runtime import StepInputError, StepRuntime, markdown


def training_ranks() -> int:
    """Processes training together (accelerate's WORLD_SIZE; the reward model's GPU is not among them)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def this_gpu() -> tuple[float | None, str]:
    """GiB per GPU where the step runs: the SageMaker instance's table entry, else the local device's."""
    return gpu_capacity(os.environ.get("SM_CURRENT_INSTANCE_TYPE"))


def check_memory_plan(runtime: StepRuntime, plan: MemoryPlan) -> dict[str, object]:
    """Log the plan, refuse it when it cannot fit (unless `force_memory_plan`), and return its metadata.

    Refusing here, before any weights are read, turns a CUDA OOM minutes into a paid job into an error that
    names the terms to shrink.
    """
    for line in plan.lines():
        runtime.log(line)
    try:
        plan.check(bool(runtime.config.get("force_memory_plan")), runtime.log)
    except MemoryPlanError as error:
        raise StepInputError(str(error)) from None
    return {"memory_plan": markdown(plan.markdown()), "memory_plan_rank_gib": round(plan.rank_gib, 3)}
