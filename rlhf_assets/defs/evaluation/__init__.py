"""The evaluation domain: the inputs every policy is evaluated on (RTP, declared prompt sets, the toxicity scorer,
SFT's shared samples), the scheduled re-evaluation and the input checks. Each policy's own suite, its checks and
its automation are built by `defs/policy_suite.py` from this package's factories."""

from dagster import Definitions, load_assets_from_modules

from rlhf_assets.defs.evaluation import toxicity_inputs
from rlhf_assets.defs.evaluation.automation import evaluate_latest_policy, evaluation_schedule
from rlhf_assets.defs.evaluation.checks import input_checks
from rlhf_assets.defs.evaluation.prompt_sets import prompt_set_asset
from rlhf_assets.defs.evaluation.suite import sft_baseline
from rlhf_assets.settings import DeploymentSettings


def definitions(settings: DeploymentSettings) -> Definitions:
    """The shared evaluation inputs, SFT's baseline, their checks, the evaluation job and its schedule."""
    return Definitions(
        assets=[*load_assets_from_modules([toxicity_inputs]),
                *(prompt_set_asset(spec) for spec in settings.prompt_sets),
                *sft_baseline(settings.prompt_set_names)],
        asset_checks=input_checks(settings.blocking_checks),
        jobs=[evaluate_latest_policy], schedules=[evaluation_schedule(settings.eval_cron)],
    )
