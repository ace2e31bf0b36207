"""Dagster resources: the artifact store and the manifest IO manager built on `UPathIOManager`.

Asset values are small JSON manifests (see `storage.Manifest`); the IO manager keeps them beside the
artifacts, locally or on S3, so lineage survives the Dagster instance and users' scripts can read them.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import boto3
from dagster import (
    ConfigurableIOManagerFactory,
    ConfigurableResource,
    InputContext,
    OutputContext,
    UPathIOManager,
)
from pydantic import Field
from upath import UPath

from rlhf_assets.labeling.groundtruth import GroundTruthJobSpec
from rlhf_assets.labeling.store import LabelStore
from rlhf_assets.presets import PROJECT_ROOT
from rlhf_assets.storage import ArtifactStore, Manifest, is_remote


def default_artifact_root() -> str:
    """`RLHF_ARTIFACT_ROOT` (a path or s3:// prefix) or `var/artifacts` in the project."""
    return os.environ.get("RLHF_ARTIFACT_ROOT", str(PROJECT_ROOT / "var" / "artifacts"))


class ArtifactStoreResource(ConfigurableResource):
    """Where models and datasets are published (content-addressed, written whole or not at all)."""

    root: str = Field(default_factory=default_artifact_root, description="Local directory or s3://bucket/prefix")

    def store(self) -> ArtifactStore:
        return ArtifactStore(self.root)


class _ManifestIO(UPathIOManager):
    extension = ".json"

    def dump_to_path(self, context: OutputContext, obj: Manifest, path: UPath) -> None:
        text = obj.model_dump_json(indent=2)
        if is_remote(str(path)):
            path.write_text(text)
            return
        local = Path(str(path))
        staging = local.with_name(f".{local.name}.{uuid.uuid4().hex[:8]}.tmp")
        staging.write_text(text)
        os.replace(staging, local)

    def load_from_path(self, context: InputContext, path: UPath) -> Manifest:
        if not path.exists():
            raise FileNotFoundError(
                f"manifest {path} for asset {context.asset_key.to_user_string()} is missing: materialize it first"
            )
        return Manifest.model_validate_json(path.read_text())


class ManifestIOManager(ConfigurableIOManagerFactory):
    """Stores each asset's manifest as `<base_dir>/<asset>.json` (local or s3://)."""

    base_dir: str = Field(
        default_factory=lambda: f"{default_artifact_root().rstrip('/')}/manifests",
        description="Directory or s3:// prefix for manifests",
    )

    def create_io_manager(self, context: object) -> _ManifestIO:
        return _ManifestIO(base_path=UPath(self.base_dir))


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
