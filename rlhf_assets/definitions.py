"""The one Dagster `Definitions` object of the rlhf-assets code location."""

from __future__ import annotations

from dagster import AssetSelection, Definitions, define_asset_job, load_assets_from_modules

from rlhf_assets.assets import data, training
from rlhf_assets.compute.local import LocalComputeBackend
from rlhf_assets.resources import ArtifactStoreResource, ManifestIOManager

all_assets = load_assets_from_modules([data, training])

materialize_all = define_asset_job(
    "materialize_all", selection=AssetSelection.all(), description="Every asset of the graph, in lineage order."
)

defs = Definitions(
    assets=all_assets,
    jobs=[materialize_all],
    resources={
        "io_manager": ManifestIOManager(),
        "artifacts": ArtifactStoreResource(),
        "compute": LocalComputeBackend(),
    },
)
