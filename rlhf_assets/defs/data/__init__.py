"""The data domain: hub snapshots, the raw HH records, the preference splits and the held-out eval prompts."""

from dagster import Definitions, load_assets_from_modules

from rlhf_assets.defs.data import datasets, snapshots
from rlhf_assets.defs.data.checks import data_checks
from rlhf_assets.settings import DeploymentSettings


def definitions(settings: DeploymentSettings) -> Definitions:
    """The data assets and their row checks."""
    return Definitions(assets=load_assets_from_modules([snapshots, datasets]),
                       asset_checks=data_checks(settings.blocking_checks))
