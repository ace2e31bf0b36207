"""The memory plan inside a GPU step: shown in its first log lines and metadata, refused before weights load."""

from __future__ import annotations

import os

from rlhf_assets.compute.memory_plan import MemoryPlan, MemoryPlanError, gpu_capacity
from rlhf_assets.step_contracts.base import Markdown
from rlhf_assets.step_contracts.models import MemoryPlanFigures
from rlhf_assets.steps.runtime import StepInputError, StepRuntime


def training_ranks() -> int:
    """Processes training together (accelerate's WORLD_SIZE; the reward model's GPU is not among them)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def this_gpu() -> tuple[float | None, str]:
    """GiB per GPU where the step runs: the SageMaker instance's table entry, else the local device's."""
    return gpu_capacity(os.environ.get("SM_CURRENT_INSTANCE_TYPE"))


def check_memory_plan(runtime: StepRuntime, plan: MemoryPlan, force: bool) -> MemoryPlanFigures:
    """Log the plan, refuse it when it cannot fit (unless the request forces it), and return it for the report.

    Refusing here, before any weights are read, turns a CUDA OOM minutes into a paid job into an error that
    names the terms to shrink.
    """
    for line in plan.lines():
        runtime.log(line)
    try:
        plan.check(force, runtime.log)
    except MemoryPlanError as error:
        raise StepInputError(str(error)) from None
    return MemoryPlanFigures(table=Markdown(plan.markdown()), rank_gib=round(plan.rank_gib, 3))
