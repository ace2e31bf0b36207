"""Running a step program for an asset and publishing its output, or reusing an identical earlier result.

A step's result is determined by its code, its config and the content hashes of its inputs (training is
seeded). When all three match an earlier, completely published result, the asset re-emits that result (same
manifest, same data version, the step's metadata) instead of launching the step again: an unchanged re-run of
the whole graph takes seconds. "Code" is the step's code version (`rlhf_assets.code_versions`): a fingerprint of
the step program and every module of the package it imports, so a change to code the step runs runs it again,
and a change elsewhere (the CLI, the labeling app) does not. Only a result this Dagster instance recorded is reused
(`reuse.py`): the store's record of it is an index, not evidence. `recompute: true` in an asset's config, or
`RLHF_REUSE_RESULTS=0` for a whole session, always runs the step.
"""

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dagster import AssetExecutionContext, Config, DataVersion, Failure, MetadataValue, Output
from pydantic import Field

from rlhf_assets.artifact_files import hash_json
from rlhf_assets.code_versions import step_code_version
from rlhf_assets.compute.backend import ComputeBackend
from rlhf_assets.compute.hardware import Hardware
from rlhf_assets.defs.common import manifest_output, summary_first
from rlhf_assets.defs.reuse import REUSE_KEY_METADATA, RecordedResult, ResultRecord, read_record, recorded_result
from rlhf_assets.presets import Preset
from rlhf_assets.resources import ArtifactStoreResource
from rlhf_assets.step_contracts.base import ReportError, StepReport, StepRequest
from rlhf_assets.storage import ArtifactStore, Manifest

GPU_POOL = "gpu"  # the pool every asset that launches a step queues on: one step per accelerator at a time


class StepConfig(Config):
    """Config of an asset computed by a step program."""

    recompute: bool = Field(
        default=False, description="Run the step even when an identical earlier result (same code, config and "
        "input data) is in the artifact store",
    )


def reuse_enabled() -> bool:
    """`RLHF_REUSE_RESULTS=0` turns result reuse off for a session (e.g. to check that training is deterministic)."""
    return os.environ.get("RLHF_REUSE_RESULTS", "1") != "0"


def received_report(request: StepRequest, metadata: dict[str, Any]) -> StepReport:
    """The step's report, validated against its contract; what the backend adds to the run's metadata (a SageMaker
    job's name, cost, ...) is not part of it. A report that does not match fails the asset, naming the keys."""
    declared = request.REPORT.wire_keys()
    values = {k: v.value for k, v in metadata.items() if k in declared}
    try:
        report = request.REPORT.from_metadata(values, f"the report of step {request.STEP}")
    except ReportError as error:
        raise Failure(description=str(error)) from None
    return report


def run_step_and_publish(
    context: AssetExecutionContext,
    *,
    request: StepRequest,
    preset: Preset,
    config: StepConfig,
    inputs: dict[str, Manifest],
    compute: ComputeBackend,
    artifacts: ArtifactStoreResource,
    reserved_processes: int = 0,
    hardware: Hardware | None = None,
    preview: Callable[[Path], dict[str, MetadataValue]] | None = None,
) -> Output[Manifest]:
    """Run the request's step program (`steps/<STEP>.py`) on the inputs' artifacts, or reuse an identical result,
    and publish its output; the manifest keeps the request as its config and the report's numbers.

    `preview` turns the step's output directory into extra metadata (e.g. a table of the first rows).
    """
    store = artifacts.store()
    step, wire = request.STEP, request.wire()
    resume_key = {"step": step, "config": wire, "inputs": {n: m.content_hash for n, m in inputs.items()}}
    code = step_code_version(step)
    asset_name = context.asset_key.to_python_identifier()
    result_key = hash_json({"asset": asset_name, "code": code, **resume_key})
    if not config.recompute and reuse_enabled():
        reused = _recorded(context, store, artifacts, result_key)
        if reused is not None:
            context.log.info(f"inputs, config and code unchanged: reusing the result of run {reused.run_id}")
            manifest = reused.manifest
            return Output(manifest, data_version=DataVersion(manifest.content_hash),
                          metadata=summary_first({**reused.metadata,
                                                  "reused_from_run": MetadataValue.text(reused.run_id),
                                                  "artifact_uri": MetadataValue.path(store.resolve(manifest.uri))}))
    run = compute.run_step(context, step=step, preset=preset, inputs=inputs, store=store, wire=wire,
                           resume_key=resume_key, reserved_processes=reserved_processes, hardware=hardware,
                           code_version=code)
    counts, metrics = received_report(request, run.metadata).numbers()
    shown = {k: v for k, v in run.metadata.items() if k not in counts and k not in metrics}  # text, tables, the job's
    published = run.publish(store, asset_name)
    output = manifest_output(
        context, store, published, preset=preset.name, config=wire, counts=counts, metrics=metrics,
        metadata={**shown, **(preview(store.local_path(published[0])) if preview else {})},
    )
    output = output.with_metadata({**output.metadata, REUSE_KEY_METADATA: MetadataValue.text(result_key)})
    store.remember(result_key, ResultRecord(run_id=context.run_id, asset=asset_name).model_dump_json())
    run.cleanup()
    return output


def _recorded(context: AssetExecutionContext, store: ArtifactStore, artifacts: ArtifactStoreResource,
              result_key: str) -> RecordedResult | None:
    """The earlier result of this work that the instance recorded, or None (with a warning where a record
    exists but does not lead to one)."""
    kept = store.recall(result_key)
    if kept is None:
        return None
    record = read_record(kept, store.record_name(result_key))
    if isinstance(record, ResultRecord):
        record = recorded_result(context.instance, store, context.asset_key, result_key, record,
                                 f"{artifacts.root.rstrip('/')}/manifests")
    if isinstance(record, str):
        context.log.warning(f"not reusing the stored result, running the step: {record}")
        return None
    return record
