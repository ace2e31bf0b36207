"""Dagster resources: the preset of a run, the artifact store, the manifest IO manager and the labeling settings.

Asset values are small JSON manifests (see `storage.Manifest`). The IO manager keeps every version beside the
artifacts (locally or on S3), named by its content hash; Dagster's event log says which version each asset's
latest materialization produced, so what a downstream step reads is always the recorded materialization, even
after a crash between writing a manifest and recording the event.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from enum import Enum
from pathlib import Path
from typing import Any

import boto3
from dagster import (
    AssetKey,
    ConfigurableIOManagerFactory,
    ConfigurableResource,
    DagsterInstance,
    EventLogEntry,
    InputContext,
    IOManager,
    MetadataValue,
    OutputContext,
)
from dagster._core.definitions.data_version import DATA_VERSION_TAG
from pydantic import Field, field_validator
from upath import UPath

from rlhf_assets.labeling.groundtruth import GroundTruthJobSpec
from rlhf_assets.labeling.store import LabelStore
from rlhf_assets.miniature.scale import miniature
from rlhf_assets.presets import PRESETS, PROJECT_ROOT, Preset, get_preset
from rlhf_assets.storage import ArtifactStore, Manifest, check_location, is_remote

PresetName = Enum("PresetName", {name: name for name in PRESETS})  # type: ignore[misc]
PresetName.__doc__ = "The presets a user can pick in the launchpad (see `rlhf_assets.presets`)."


def default_preset_name() -> PresetName:
    """`RLHF_PRESET` or `tiny`; an unknown name fails when the code location loads, listing the valid ones."""
    return PresetName(get_preset(os.environ.get("RLHF_PRESET", "tiny")).name)


class PresetResource(ConfigurableResource):
    """The preset of a run, chosen once for every asset in it: `RLHF_PRESET` sets the code location's default,
    the launchpad's `resources: preset: config: name:` changes it for one run. One run cannot mix presets."""

    name: PresetName = Field(default_factory=default_preset_name, description="tiny (offline CPU demo), small "
                             "(Pythia-160M, one GPU) or gptj_6b (the reference recipe on SageMaker)")
    miniature: bool = Field(default_factory=lambda: os.environ.get("RLHF_MINIATURE", "0") == "1",
                            description="Run the preset as configured with only sizes shrunk, against the local hub "
                            "mirror (`RLHF_MINIATURE=1`; see docs/concepts/presets.md)")

    def get(self) -> Preset:
        """The chosen preset, in miniature when asked."""
        chosen = get_preset(self.name.value)
        return miniature(chosen) if self.miniature else chosen


def default_artifact_root() -> str:
    """`RLHF_ARTIFACT_ROOT` (a path or s3:// prefix) or `var/artifacts` in the project."""
    return os.environ.get("RLHF_ARTIFACT_ROOT", str(PROJECT_ROOT / "var" / "artifacts"))


class ArtifactStoreResource(ConfigurableResource):
    """Where models and datasets are published (content-addressed, written whole or not at all)."""

    root: str = Field(default_factory=default_artifact_root, description="Local directory or s3://bucket/prefix")

    @field_validator("root")
    @classmethod
    def _location(cls, root: str) -> str:
        return check_location(root, "artifacts.root")

    def store(self) -> ArtifactStore:
        return ArtifactStore(self.root)


MANIFEST_METADATA_KEY = "manifest"


class ManifestRecordError(LookupError):
    """Dagster's event log records no readable manifest for an asset (never materialized, or from before)."""


def _manifest_base(base_dir: str) -> UPath:
    return UPath(base_dir if is_remote(base_dir) else os.path.abspath(base_dir))


def write_manifest(base_dir: str, manifest: Manifest, asset_path: list[str]) -> str:
    """Store `manifest` under its own content hash and return its name relative to `base_dir`.

    Manifest files are never overwritten: `<asset>/<hash16>.json` always holds the same bytes, so a crash
    between writing it and Dagster recording the materialization leaves an unreferenced file, never a changed
    value under old lineage. Which version is current is recorded only in the event log (`recorded_manifest`).
    """
    text = manifest.model_dump_json(indent=2)
    name = "/".join([*asset_path, f"{hashlib.sha256(text.encode()).hexdigest()[:16]}.json"])
    path = _manifest_base(base_dir) / name
    if is_remote(str(path)):
        path.write_text(text)  # an S3 PUT is atomic
        return name
    local = Path(str(path))
    local.parent.mkdir(parents=True, exist_ok=True)
    staging = local.with_name(f".{local.name}.{uuid.uuid4().hex[:8]}.tmp")
    staging.write_text(text)
    os.replace(staging, local)
    return name


def recorded_manifest(instance: DagsterInstance, asset_key: AssetKey, base_dir: str | None = None) -> Manifest:
    """The manifest of `asset_key`'s latest materialization recorded in `instance`'s event log.

    This is what every downstream step reads, and what scripts should read: the manifest file the event names,
    checked against its content-hash name and against the data version the event records.
    """
    event = instance.get_latest_materialization_event(asset_key)
    if event is None or event.asset_materialization is None:
        raise ManifestRecordError(f"asset {asset_key.to_user_string()} has no recorded materialization in this "
                                  "Dagster instance: materialize it first")
    return manifest_of_event(event, asset_key, base_dir)


def manifest_of_event(event: EventLogEntry, asset_key: AssetKey, base_dir: str | None = None) -> Manifest:
    """The manifest one recorded materialization of `asset_key` names, checked against its content-hash name and
    the data version the event records: the instance, not any file in the store, says what the value was."""
    base_dir = base_dir or default_manifest_dir()
    shown = asset_key.to_user_string()
    materialization = event.asset_materialization
    if materialization is None:
        raise ManifestRecordError(f"event of run {event.run_id} is not a materialization of asset {shown}")
    entry = materialization.metadata.get(MANIFEST_METADATA_KEY)
    name = str(entry.value) if entry is not None else ""
    parts = name.split("/")
    if not name or any(part in ("", ".", "..") for part in parts) or parts[:-1] != list(asset_key.path):
        raise ManifestRecordError(f"asset {shown}'s materialization in run {event.run_id} names no manifest "
                                  f"of this asset ({MANIFEST_METADATA_KEY}={name!r}): re-materialize {shown}")
    path = _manifest_base(base_dir) / name
    if not path.exists():
        raise ManifestRecordError(f"manifest {path} of asset {shown} (run {event.run_id}) is missing: "
                                  f"re-materialize {shown}")
    text = path.read_text()
    if not parts[-1].startswith(hashlib.sha256(text.encode()).hexdigest()[:16]):
        raise ManifestRecordError(f"manifest {path} of asset {shown} no longer hashes to its name (edited after "
                                  f"it was written): re-materialize {shown}")
    manifest = Manifest.model_validate_json(text)
    recorded_version = (materialization.tags or {}).get(DATA_VERSION_TAG)
    if recorded_version is not None and recorded_version != manifest.content_hash:
        raise ManifestRecordError(f"manifest {path} holds data version {manifest.content_hash}, but run "
                                  f"{event.run_id} recorded {recorded_version} for asset {shown}")
    return manifest


def latest_artifact(asset: str, *, dagster_home: str | None = None,
                    artifact_root: str | None = None) -> tuple[Manifest, Path]:
    """The recorded manifest of `asset` and its verified local directory, for scripts outside Dagster.

    Reads the instance at `dagster_home` (default `DAGSTER_HOME`) and the store at `artifact_root` (default
    `RLHF_ARTIFACT_ROOT`): the same pair a code location uses, so a script sees what downstream steps see.
    """
    home = dagster_home or os.environ.get("DAGSTER_HOME")
    if not home:
        raise ManifestRecordError("DAGSTER_HOME is not set: point it at the instance that ran the materializations")
    if not Path(home).is_dir():
        raise ManifestRecordError(f"DAGSTER_HOME {home!r} is not a directory: point it at the instance that ran the "
                                  "materializations")
    root = artifact_root or default_artifact_root()
    with DagsterInstance.from_config(home) as instance:
        manifest = recorded_manifest(instance, AssetKey.from_user_string(asset), f"{root.rstrip('/')}/manifests")
    return manifest, ArtifactStore(root).verified_path(manifest)


class _ManifestIO(IOManager):
    """Writes each output's manifest under its content hash and names it in the materialization's metadata;
    reads an input's manifest from the latest materialization Dagster recorded (never from a mutable file)."""

    def __init__(self, base_dir: str) -> None:
        self.base_dir = base_dir

    def handle_output(self, context: OutputContext, obj: Manifest) -> None:
        name = write_manifest(self.base_dir, obj, list(context.asset_key.path))
        context.add_output_metadata({MANIFEST_METADATA_KEY: MetadataValue.text(name)})

    def load_input(self, context: InputContext) -> Manifest:
        return recorded_manifest(context.instance, context.asset_key, self.base_dir)


def default_manifest_dir() -> str:
    """Manifests live beside the artifacts: `<artifact root>/manifests`."""
    return f"{default_artifact_root().rstrip('/')}/manifests"


class ManifestIOManager(ConfigurableIOManagerFactory):
    """Keeps each asset's manifests as `<base_dir>/<asset>/<hash16>.json` (local or s3://); the event log says
    which one is current."""

    base_dir: str = Field(default_factory=default_manifest_dir, description="Directory or s3:// prefix for manifests")

    @field_validator("base_dir")
    @classmethod
    def _location(cls, base_dir: str) -> str:
        return check_location(base_dir, "io_manager.base_dir")

    def create_io_manager(self, context: object) -> _ManifestIO:
        return _ManifestIO(self.base_dir)


def default_labeling_db() -> str:
    """`RLHF_LABELING_DB` or `var/labeling/labels.sqlite` in the project: local even when artifacts are on S3."""
    return os.environ.get("RLHF_LABELING_DB", str(PROJECT_ROOT / "var" / "labeling" / "labels.sqlite"))


class LabelingResource(ConfigurableResource):
    """Where human labels live: the labeling app's SQLite database and, for Ground Truth, the AWS settings.

    The Ground Truth fields default to `RLHF_GT_*` environment variables so the launchpad needs no secrets
    and no ARNs typed by hand; credentials come from the usual boto3 chain, never from config.
    """

    db_path: str = Field(default_factory=default_labeling_db, description="SQLite file shared with the app")
    gt_s3_prefix: str | None = Field(default_factory=lambda: os.environ.get("RLHF_GT_S3_PREFIX"),
                                     description="s3://bucket/prefix for Ground Truth manifests and output")
    gt_role_arn: str | None = Field(default_factory=lambda: os.environ.get("RLHF_GT_ROLE_ARN"),
                                    description="IAM role Ground Truth assumes (RLHF_GT_ROLE_ARN)")
    gt_workteam_arn: str | None = Field(default_factory=lambda: os.environ.get("RLHF_GT_WORKTEAM_ARN"),
                                        description="Private or vendor workteam (RLHF_GT_WORKTEAM_ARN)")
    gt_pre_annotation_lambda_arn: str | None = Field(
        default_factory=lambda: os.environ.get("RLHF_GT_PRE_LAMBDA_ARN"),
        description="Deployed groundtruth_lambdas.pre_annotation (RLHF_GT_PRE_LAMBDA_ARN)")
    gt_consolidation_lambda_arn: str | None = Field(
        default_factory=lambda: os.environ.get("RLHF_GT_CONSOLIDATION_LAMBDA_ARN"),
        description="Deployed groundtruth_lambdas.consolidate (RLHF_GT_CONSOLIDATION_LAMBDA_ARN)")
    region_name: str | None = Field(default_factory=lambda: os.environ.get("AWS_REGION"),
                                    description="AWS region of the Ground Truth job (AWS_REGION)")
    s3_endpoint_url: str | None = Field(default=None, description="Only for S3-compatible stores and tests")

    def store(self) -> LabelStore:
        return LabelStore(Path(self.db_path))

    def ground_truth_spec(self, job_name: str, workers_per_task: int) -> GroundTruthJobSpec:
        """The job spec from these settings; names every missing setting at once."""
        values = {"s3_prefix": self.gt_s3_prefix, "role_arn": self.gt_role_arn,
                  "workteam_arn": self.gt_workteam_arn,
                  "pre_annotation_lambda_arn": self.gt_pre_annotation_lambda_arn,
                  "consolidation_lambda_arn": self.gt_consolidation_lambda_arn}
        missing = [f"gt_{name} (RLHF_GT_{_ENV_SUFFIX[name]})" for name, value in values.items() if not value]
        if missing:
            raise ValueError("channel ground_truth needs labeling resource settings: " + ", ".join(missing))
        return GroundTruthJobSpec(job_name=job_name, workers_per_task=workers_per_task, **values)

    def sagemaker_client(self) -> Any:
        return boto3.client("sagemaker", region_name=self.region_name)

    def s3_client(self) -> Any:
        return boto3.client("s3", region_name=self.region_name, endpoint_url=self.s3_endpoint_url)


_ENV_SUFFIX = {"s3_prefix": "S3_PREFIX", "role_arn": "ROLE_ARN", "workteam_arn": "WORKTEAM_ARN",
               "pre_annotation_lambda_arn": "PRE_LAMBDA_ARN",
               "consolidation_lambda_arn": "CONSOLIDATION_LAMBDA_ARN"}
