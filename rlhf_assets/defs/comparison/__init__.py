"""The comparison domain: every policy against SFT in one table."""

from dagster import Definitions

from rlhf_assets.defs.comparison.assets import comparison_asset
from rlhf_assets.defs.comparison.automation import comparison_automation
from rlhf_assets.settings import DeploymentSettings


def definitions(settings: DeploymentSettings) -> Definitions:
    """`policy_comparison` and the sensor that keeps it current."""
    return Definitions(assets=[comparison_asset(settings.prompt_set_names)], sensors=[comparison_automation])
