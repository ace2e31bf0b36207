"""The models domain as one `Definitions` (kept out of the package's `__init__`, so an asset's code
version does not cover its domain's checks, sensors or settings)."""

from dagster import Definitions, load_assets_from_modules

from rlhf_assets.defs.models import training
from rlhf_assets.defs.models.automation import orphaned_training_jobs
from rlhf_assets.defs.models.checks import policy_checks
from rlhf_assets.settings import DeploymentSettings


def model_definitions(settings: DeploymentSettings) -> Definitions:
    """The model assets, PPO's checks and the orphaned-jobs sensor."""
    return Definitions(assets=load_assets_from_modules([training]),
                       asset_checks=policy_checks(settings.blocking_checks), sensors=[orphaned_training_jobs])
