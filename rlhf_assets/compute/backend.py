"""Choosing where a step runs: this machine or SageMaker, by the preset or by configuration, same asset code."""

import os
from typing import Any

from dagster import AssetExecutionContext, ConfigurableResource, Failure
from pydantic import Field

from rlhf_assets.compute.base import StepBackend, StepLaunch, StepRun
from rlhf_assets.compute.hardware import Hardware, step_hardware
from rlhf_assets.compute.local import LocalComputeBackend
from rlhf_assets.compute.sagemaker import SageMakerComputeBackend
from rlhf_assets.specs import Preset
from rlhf_assets.storage import ArtifactStore, Manifest


class ComputeBackend(ConfigurableResource):
    """The `compute` resource: runs step programs locally or as SageMaker training jobs.

    `backend` (or `RLHF_COMPUTE_BACKEND`) overrides the preset's choice: `tiny` runs locally, `gptj_6b` on
    SageMaker (`ml.p4d.24xlarge`). A new backend is a field here and an entry in `backends()`.
    """

    local: LocalComputeBackend
    sagemaker: SageMakerComputeBackend
    backend: str | None = Field(
        default_factory=lambda: os.environ.get("RLHF_COMPUTE_BACKEND") or None,
        description="local or sagemaker; unset follows the preset's compute.backend",
    )

    def backends(self) -> dict[str, StepBackend]:
        return {"local": self.local, "sagemaker": self.sagemaker}

    def run_step(
        self,
        context: AssetExecutionContext,
        *,
        step: str,
        preset: Preset,
        inputs: dict[str, Manifest],
        store: ArtifactStore,
        wire: dict[str, Any],
        resume_key: dict[str, Any],
        reserved_processes: int = 0,
        hardware: Hardware | None = None,
        code_version: str = "",
    ) -> StepRun:
        """Run `steps/<step>.py` on the inputs' artifacts wherever the preset or config says."""
        name = self.backend or preset.compute.backend
        backends = self.backends()
        if name not in backends:
            raise Failure(description=f"compute backend {name!r} is not one of {', '.join(backends)}")
        request = step_launch(step, asset=context.asset_key.to_python_identifier(), preset=preset, inputs=inputs,
                               wire=wire, resume_key=resume_key, reserved_processes=reserved_processes,
                               hardware=hardware, code_version=code_version)
        return backends[name].run_step(context, request, store)


def step_launch(step: str, *, asset: str, preset: Preset, inputs: dict[str, Manifest], wire: dict[str, Any],
                 resume_key: dict[str, Any], reserved_processes: int = 0,
                 hardware: Hardware | None = None, code_version: str = "") -> StepLaunch:
    """The request for one step, on the machine its declared hardware calls for: only training steps get the
    training instance and its ranks; sampling and scoring one GPU; everything else a CPU instance. An asset whose
    configuration needs less than the step's declaration (a pretrained reward model: scoring, no training)
    passes `hardware`."""
    compute, hardware = preset.compute, hardware or step_hardware(step)
    common = {"step": step, "asset": asset, "inputs": inputs, "wire": wire, "resume_key": resume_key,
              "hardware": hardware.value, "code_version": code_version}
    if hardware is Hardware.TRAINING:
        return StepLaunch(**common, num_processes=max(1, compute.num_processes - reserved_processes),
                           accelerate_config=compute.accelerate_config, instance_type=compute.instance_type,
                           instance_count=compute.instance_count)
    if hardware is Hardware.GPU:
        return StepLaunch(**common, instance_type=compute.inference_instance_type)
    return StepLaunch(**common, instance_type=compute.cpu_instance_type)
