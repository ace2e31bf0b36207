"""Dagster resources: the artifact store and the manifest IO manager built on `UPathIOManager`.

Asset values are small JSON manifests (see `storage.Manifest`); the IO manager keeps them beside the
artifacts, locally or on S3, so lineage survives the Dagster instance and users' scripts can read them.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from dagster import (
    ConfigurableIOManagerFactory,
    ConfigurableResource,
    InputContext,
    OutputContext,
    UPathIOManager,
)
from pydantic import Field
from upath import UPath

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
