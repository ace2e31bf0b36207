"""The evaluation domain as one `Definitions` (kept out of the package's `__init__`, so an asset's code
version does not cover its domain's checks, sensors or settings)."""

from dagster import Definitions, load_assets_from_modules

from rlhf_assets.defs.evaluation import toxicity_inputs
from rlhf_assets.defs.evaluation.automation import evaluate_latest_policy, evaluation_schedule, keep_evaluations_current
from rlhf_assets.defs.evaluation.checks import input_checks
from rlhf_assets.defs.evaluation.prompt_sets import prompt_set_asset
from rlhf_assets.defs.evaluation.suite import sft_baseline
from rlhf_assets.settings import DeploymentSettings


def evaluation_definitions(settings: DeploymentSettings) -> Definitions:
    """The shared evaluation inputs, SFT's baseline, their checks, the evaluation job, its schedule and the sensor
    that keeps every evaluation current."""
    return Definitions(
        assets=[*load_assets_from_modules([toxicity_inputs]),
                *(prompt_set_asset(spec) for spec in settings.prompt_sets),
                *sft_baseline(settings.prompt_set_names)],
        asset_checks=input_checks(settings.blocking_checks),
        jobs=[evaluate_latest_policy], schedules=[evaluation_schedule(settings.eval_cron)],
        sensors=[keep_evaluations_current],
    )
