"""`hub_snapshots/<role>`: every hub model and dataset a preset uses, staged once and pinned.

Each asset runs the `hub_snapshot` step (a CPU step, the only one that reaches the hub) for one role of
`data.hub_sources`. Its metadata names the repo, the revision asked for and the commit it resolved to; its data
version is the files' content hash, so a changed upstream repository shows up as a new version of everything
trained from it, never as a silent change. A role the preset does not use, or fills from a local file, stages
nothing.
"""

from dagster import AssetExecutionContext, AssetKey, AssetsDefinition, Output, asset
from pydantic import Field

from rlhf_assets.code_versions import step_code_version
from rlhf_assets.compute.backend import ComputeBackend
from rlhf_assets.data.hh import DataError
from rlhf_assets.data.hub_sources import SNAPSHOT_ROLES, NotStagedError, preset_sources, staged_path
from rlhf_assets.data.sources import describe_source
from rlhf_assets.defs.step_runs import StepConfig, run_step_and_publish
from rlhf_assets.resources import ArtifactStoreResource, PresetResource
from rlhf_assets.step_contracts.models import HubSnapshotRequest
from rlhf_assets.storage import ArtifactStore, Manifest

SNAPSHOT_PREFIX = "hub_snapshots"


class SnapshotConfig(StepConfig):
    """Stage another revision than the preset's (a commit, to pin exactly)."""

    revision: str | None = Field(None, description="Hub revision (branch, tag or commit); unset: the preset's")


def snapshot_key(role: str) -> AssetKey:
    """The asset key of a role's snapshot."""
    return AssetKey([SNAPSHOT_PREFIX, role])


def _snapshot_asset(role: str) -> AssetsDefinition:
    @asset(key=snapshot_key(role), code_version=step_code_version("hub_snapshot"), group_name="data",
           kinds={"huggingface"}, description=f"The preset's {role.replace('_', ' ')} from the hub, staged once "
           "and pinned (repo id, resolved commit, content hash); nothing when the preset reads a local file or does "
           "not use this role.")
    def snapshot(context: AssetExecutionContext, config: SnapshotConfig, preset: PresetResource,
                 compute: ComputeBackend, artifacts: ArtifactStoreResource) -> Output[Manifest]:
        chosen = preset.get()
        source = preset_sources(chosen)[role]
        if config.revision:
            source = source.model_copy(update={"revision": config.revision})
        return run_step_and_publish(context, config=config, request=HubSnapshotRequest(source=source),
                                    preset=chosen, inputs={}, compute=compute, artifacts=artifacts)

    return snapshot


snapshot_assets = [_snapshot_asset(role) for role in SNAPSHOT_ROLES]


def staged_source(source: str, snapshot: Manifest, store: ArtifactStore) -> str:
    """Where an in-process asset reads `source`: a local path as it is, a hub dataset from its snapshot."""
    if describe_source(source) != "hub_dataset":
        return source
    try:
        return str(staged_path(store.verified_path(snapshot), source))
    except NotStagedError as exc:
        raise DataError(source, None, None, str(exc)) from None
