"""The comparison domain as one `Definitions` (kept out of the package's `__init__`, so an asset's code
version does not cover its domain's checks, sensors or settings)."""

from dagster import Definitions

from rlhf_assets.defs.comparison.assets import comparison_asset
from rlhf_assets.settings import DeploymentSettings


def comparison_definitions(settings: DeploymentSettings) -> Definitions:
    """`policy_comparison` (its automation condition is evaluated with the rest of the evaluation side's)."""
    return Definitions(assets=[comparison_asset(settings.prompt_set_names)])
