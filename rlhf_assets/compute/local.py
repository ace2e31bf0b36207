"""The local compute backend: a step program as a subprocess under Dagster Pipes.

The step sees the SageMaker container contract (emulated by `ContainerLayout`), its logs and metadata stream
into the Dagster run through Pipes, and a run cancelled in Dagster terminates the process. With more than one
process the step is started by `accelerate launch` with the preset's accelerate config.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dagster import (
    AssetExecutionContext,
    ConfigurableResource,
    Failure,
    PipesSubprocessClient,
)
from dagster._core.errors import DagsterPipesExecutionError  # not exported by `dagster` 1.13
from pydantic import Field

from rlhf_assets.artifact_files import hash_json
from rlhf_assets.compute.base import StepLaunch, StepRun, output_description
from rlhf_assets.compute.container import ContainerLayout
from rlhf_assets.compute.launch import step_command
from rlhf_assets.compute.message_file import WholeLineMessageReader
from rlhf_assets.compute.warm.protocol import DISABLE_ENV
from rlhf_assets.contract import LAUNCHED_AT_ENV
from rlhf_assets.ppo.checkpoint import staging_root
from rlhf_assets.specs import PROJECT_ROOT
from rlhf_assets.storage import ArtifactStore


@contextmanager
def exclusive_checkpoints(checkpoint_dir: Path, context: AssetExecutionContext) -> Iterator[None]:
    """Hold the checkpoint directory of this exact work (config + inputs) for one run at a time.

    Two concurrent runs of the same work would otherwise write and resume from the same checkpoints. The second
    waits (saying for whom) and then resumes from what the first left, instead of racing it. The lock is an
    `flock`, so a killed run releases it with its process.
    """
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    with (checkpoint_dir.parent / f"{checkpoint_dir.name}.lock").open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            context.log.warning(f"run {handle.read().strip() or '?'} is computing the same work; waiting for it")
            fcntl.flock(handle, fcntl.LOCK_EX)
            checkpoint_dir.mkdir(parents=True, exist_ok=True)  # the first run cleaned up after publishing
        handle.seek(0)
        handle.truncate()
        handle.write(context.run_id)
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class LocalComputeBackend(ConfigurableResource):
    """Runs step programs on this machine; scratch and checkpoints live under `scratch_dir`."""

    scratch_dir: str = Field(
        default_factory=lambda: os.environ.get("RLHF_SCRATCH_DIR", str(PROJECT_ROOT / "var" / "scratch")),
        description="Container trees of running steps and their resumable checkpoints",
    )
    warm_worker: bool = Field(
        default_factory=lambda: os.environ.get(DISABLE_ENV, "1") != "0",
        description="Start one-process steps in the warm worker (libraries imported once, one fork per step: "
        "~0.5 s to start instead of 5-10 s); false, or RLHF_WARM_WORKER=0, starts each as a plain subprocess",
    )

    def command(self, request: StepLaunch) -> list[str]:
        """The step's argv here: the warm worker's client for a one-process step, else what a container runs."""
        if self.warm_worker and request.num_processes <= 1:
            return [sys.executable, "-m", "rlhf_assets.compute.warm.client", f"rlhf_assets.steps.{request.step}"]
        return step_command(request.step, request.num_processes, request.accelerate_config)

    def run_step(self, context: AssetExecutionContext, request: StepLaunch, store: ArtifactStore) -> StepRun:
        """Run one step to completion and return its output; failures raise with the step's own reason.

        S3 inputs are downloaded to a local cache first; every input is staged as the step's own copy, which the
        step verifies against the recorded hash before reading it; the checkpoint directory is named by the request's
        `resume_key`, so a re-run of the same work after a crash resumes.
        """
        channels = {name: store.staging_source(manifest) for name, manifest in request.inputs.items()}
        scratch = Path(self.scratch_dir)
        layout = ContainerLayout.create(
            root=scratch / "runs" / f"{request.asset}-{context.run_id[:8]}",
            checkpoint_dir=scratch / "checkpoints" / request.asset / hash_json(request.resume_key)[:16],
            channels=channels,
        )
        env = layout.environment({name: m.content_hash for name, m in request.inputs.items()}, num_gpus=0)
        client = PipesSubprocessClient(cwd=str(PROJECT_ROOT), forward_termination=True,
                                       message_reader=WholeLineMessageReader())
        try:
            with exclusive_checkpoints(layout.checkpoint_dir, context):
                context.log.info(f"launching step {request.step!r} locally in {layout.root}")
                invocation = client.run(
                    context=context, command=self.command(request), extras={"request": request.wire},
                    env={**env, LAUNCHED_AT_ENV: repr(time.time())},
                )
        except DagsterPipesExecutionError as exc:
            reason = layout.failure_reason() or str(exc)
            raise Failure(description=f"step {request.step!r} failed: {reason}") from None
        result = invocation.get_materialize_result()
        return StepRun(output_uri=str(layout.model_dir),
                       description=output_description(invocation.get_custom_messages(), request.step),
                       metadata=dict(result.metadata or {}),
                       scratch=[layout.root, layout.checkpoint_dir, staging_root(layout.checkpoint_dir)])
