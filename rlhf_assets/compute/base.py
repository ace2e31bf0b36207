"""The compute interface: what an asset asks of a backend, and what a backend gives back.

A backend runs one step program on some machine under the container contract (`rlhf_assets.contract`) and
returns where the step's model directory ended up, described by the step itself (content hash and file sizes,
computed where the bytes are). Adding a backend (Kubernetes through dagster-k8s Pipes, ECS, Batch) is one module
that implements `StepBackend` and one entry in `ComputeBackend.backends` (`compute/backend.py`).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from dagster import AssetExecutionContext, Failure

from rlhf_assets.artifact_files import OutputDescription
from rlhf_assets.contract import OUTPUT_DESCRIPTION_MESSAGE
from rlhf_assets.storage import ArtifactStore, Manifest


@dataclass(frozen=True)
class StepLaunch:
    """One step run: the program, its inputs (upstream manifests), its request (`step_contracts`, as it travels)
    and the machines it needs.

    `resume_key` (step, request, input hashes) names the checkpoint location, so a re-run of the same work after a
    crash or a spot interruption resumes, while different work never picks up a stranger's checkpoint.
    """

    step: str
    asset: str
    inputs: dict[str, Manifest]
    wire: dict[str, Any]
    resume_key: dict[str, Any]
    num_processes: int = 1
    accelerate_config: str | None = None
    instance_type: str = "local"
    instance_count: int = 1
    hardware: str = "training"  # compute.hardware.Hardware: what the step needs (a backend may override GPU types)
    code_version: str = ""  # the step program's code version: a job of older code is not the same work

    @property
    def world_size(self) -> int:
        """Processes across all hosts: the number of Pipes writers a run has."""
        return self.num_processes * self.instance_count


@dataclass
class StepRun:
    """A finished step: where its output is (a local directory or an S3 prefix), as the step described it."""

    output_uri: str
    description: OutputDescription
    metadata: dict[str, Any]
    scratch: list[Path] = field(default_factory=list)
    published: list[Callable[[], object]] = field(default_factory=list)

    def cleanup(self) -> None:
        """Drop the scratch trees (and local checkpoints) and run the backend's clean-ups (a job's checkpoint
        prefix on S3) once the output is safely published; never before, so a failed publish can resume."""
        for path in self.scratch:
            shutil.rmtree(path, ignore_errors=True)
        for clean in self.published:
            clean()

    def publish(self, store: ArtifactStore, name: str) -> tuple[str, str, list[str]]:
        """Put the output in the artifact store as `name`: a copy or streamed upload of a local directory, a
        server-side copy of an S3 prefix. Returns (uri, content_hash, files)."""
        return store.publish_output(self.output_uri, name, self.description)


def output_description(custom_messages: Sequence[Any], step: str) -> OutputDescription:
    """The step's description of its output (its Pipes custom message), or a clear failure without one."""
    for message in reversed(custom_messages):
        if isinstance(message, dict) and OUTPUT_DESCRIPTION_MESSAGE in message:
            return OutputDescription.model_validate(message[OUTPUT_DESCRIPTION_MESSAGE])
    raise Failure(description=f"step {step!r} finished without describing its output (no content hash was "
                              "reported); the step program and this package are out of step")


class StepBackend(Protocol):
    """What every compute backend provides: run a step to completion, or raise `dagster.Failure` with the
    step's own reason."""

    def run_step(self, context: AssetExecutionContext, request: StepLaunch, store: ArtifactStore) -> StepRun:
        """Run `request` and return its described output; never leaves a job running when it raises."""
        ...
