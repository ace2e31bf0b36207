"""Reusing an earlier step result only as this Dagster instance recorded it.

The artifact store keeps, under `_results/<reuse key>.json`, the id of the run that computed each piece of work.
Anyone who can write the store can write that file, so it is only an index: the result reused is the one the
instance's event log recorded for that run. That materialization must be of this asset, carry the same reuse key
(asset, step code version, config and input hashes), and name a manifest that still hashes to its name and to the
recorded data version; the artifact it names is then checked against that full content hash (locally every file
is re-hashed; on S3 the marker's hash and each object's ETag are compared, and the files are re-hashed when they
are downloaded). A record that points anywhere else, or cannot be read at all, is ignored with a warning and the
step runs again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dagster import AssetKey, DagsterEventType, DagsterInstance, EventLogEntry
from pydantic import BaseModel, Field, ValidationError

from rlhf_assets.resources import MANIFEST_METADATA_KEY, ManifestRecordError, manifest_of_event
from rlhf_assets.storage import ArtifactStore, Manifest

REUSE_KEY_METADATA = "reuse_key"
# Metadata a reused materialization does not copy from the original: the IO manager names the manifest again, the
# artifact's path is re-resolved in this project, and the original run is named afresh.
NOT_COPIED = frozenset({MANIFEST_METADATA_KEY, "artifact_uri", "reused_from_run"})


class ResultRecord(BaseModel):
    """What the store keeps for one piece of work: which run computed it (nothing else is trusted). A run id is
    Dagster's UUID; anything else (`../x`, `index`) would name a file of the instance's storage, not a run."""

    run_id: str = Field(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
    asset: str


@dataclass(frozen=True)
class RecordedResult:
    """A result the instance recorded, ready to be emitted again."""

    manifest: Manifest
    metadata: dict[str, Any]
    run_id: str


def read_record(text: str, source: str) -> ResultRecord | str:
    """The record, or why it cannot be read (truncated, binary, another format): a reason to recompute, never a
    failure of the asset."""
    try:
        return ResultRecord.model_validate_json(text)
    except (ValidationError, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        return f"the reuse record {source} is unreadable ({reason})"


def _materialization_in_run(instance: DagsterInstance, run_id: str, asset_key: AssetKey) -> EventLogEntry | None:
    events = instance.all_logs(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION)
    mine = [event for event in events
            if event.dagster_event is not None and event.dagster_event.asset_key == asset_key]
    return mine[-1] if mine else None


def recorded_result(instance: DagsterInstance, store: ArtifactStore, asset_key: AssetKey, reuse_key: str,
                    record: ResultRecord, manifests: str) -> RecordedResult | str:
    """The result `record` points at, if this instance recorded it for exactly this work; else why not."""
    shown = asset_key.to_user_string()
    if record.asset != asset_key.to_python_identifier():
        return f"the reuse record names asset {record.asset!r}, not {shown}"
    if not instance.has_run(record.run_id):
        return f"this Dagster instance has no run {record.run_id!r}"
    try:
        return _recorded(instance, store, asset_key, reuse_key, record, manifests)
    except (OSError, ValueError) as error:  # an unreadable manifest or artifact: recompute, never fail
        return f"the recorded result of run {record.run_id} cannot be read ({type(error).__name__}: {error})"


def _recorded(instance: DagsterInstance, store: ArtifactStore, asset_key: AssetKey, reuse_key: str,
              record: ResultRecord, manifests: str) -> RecordedResult | str:
    shown = asset_key.to_user_string()
    event = _materialization_in_run(instance, record.run_id, asset_key)
    if event is None or event.asset_materialization is None:
        return f"this Dagster instance recorded no materialization of {shown} in run {record.run_id!r}"
    metadata = event.asset_materialization.metadata
    recorded_key = metadata.get(REUSE_KEY_METADATA)
    if recorded_key is None or recorded_key.value != reuse_key:
        return (f"run {record.run_id}'s materialization of {shown} was not this work (its reuse key is "
                f"{recorded_key.value if recorded_key else None!r}, this work's {reuse_key!r})")
    try:
        manifest = manifest_of_event(event, asset_key, manifests)
    except ManifestRecordError as error:
        return str(error)
    problem = store.problem(manifest.uri, expected_hash=manifest.content_hash)
    if problem is not None:
        return problem
    kept = {name: value for name, value in metadata.items() if name not in NOT_COPIED}
    return RecordedResult(manifest=manifest, metadata=kept, run_id=record.run_id)
