"""The data domain as one `Definitions` (kept out of the package's `__init__`, so an asset's code
version does not cover its domain's checks, sensors or settings)."""

from dagster import Definitions, load_assets_from_modules

from rlhf_assets.defs.data import datasets, snapshots
from rlhf_assets.defs.data.checks import data_checks
from rlhf_assets.settings import DeploymentSettings


def data_definitions(settings: DeploymentSettings) -> Definitions:
    """The data assets and their row checks."""
    return Definitions(assets=load_assets_from_modules([snapshots, datasets]),
                       asset_checks=data_checks(settings.blocking_checks))
