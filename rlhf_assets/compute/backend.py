"""Choosing where a step runs: this machine or SageMaker, by the preset or by configuration, same asset code."""

import os
from pathlib import Path
from typing import Any

from dagster import AssetExecutionContext, ConfigurableResource, Failure
from pydantic import Field

from rlhf_assets.compute.local import LocalComputeBackend, StepRun
from rlhf_assets.compute.sagemaker import SageMakerComputeBackend
from rlhf_assets.presets import Preset
from rlhf_assets.storage import ArtifactStore, Manifest

BACKENDS = ("local", "sagemaker")


class ComputeBackend(ConfigurableResource):
    """The `compute` resource: runs step programs locally or as SageMaker training jobs.

    `backend` (or `RLHF_COMPUTE_BACKEND`) overrides the preset's choice: `tiny` runs locally, `gptj_6b` on
    SageMaker (`ml.p4d.24xlarge`).
    """

    local: LocalComputeBackend
    sagemaker: SageMakerComputeBackend
    backend: str | None = Field(
        default_factory=lambda: os.environ.get("RLHF_COMPUTE_BACKEND") or None,
        description="local or sagemaker; unset follows the preset's compute.backend",
    )

    def run_step(
        self,
        context: AssetExecutionContext,
        *,
        step: str,
        preset: Preset,
        inputs: dict[str, Manifest],
        store: ArtifactStore,
        config: dict[str, Any],
        resume_key: dict[str, Any],
        reserved_processes: int = 0,
    ) -> StepRun:
        """Run `steps/<step>.py` on the inputs' artifacts wherever the preset or config says."""
        backend = self.backend or preset.compute.backend
        if backend not in BACKENDS:
            raise Failure(description=f"compute backend {backend!r} is not one of {', '.join(BACKENDS)}")
        processes = max(1, preset.compute.num_processes - reserved_processes)
        if backend == "local":
            channels = {name: store.local_path(manifest.uri) for name, manifest in inputs.items()}
            return self.local.run_step(context, step=step, channels=channels, config=config, resume_key=resume_key,
                                       num_processes=processes, accelerate_config=preset.compute.accelerate_config)
        return self.sagemaker.run_step(
            context, step=step, inputs={name: manifest.uri for name, manifest in inputs.items()}, config=config,
            resume_key=resume_key, instance_type=preset.compute.instance_type,
            instance_count=preset.compute.instance_count, num_processes=processes,
            accelerate_config=preset.compute.accelerate_config, scratch_dir=Path(self.local.scratch_dir),
        )
