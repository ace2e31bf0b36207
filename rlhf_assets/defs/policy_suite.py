"""Everything one policy gets, built by one function as one `Definitions`: its evaluation suite (eval responses,
toxicity on every prompt set, the judge's verdict, the over-optimisation curve for a policy trained against the
reward model), its human evaluation, the checks on both, and their automation (each asset's condition, evaluated by
the evaluation side's sensor, and the labels-complete sensor). The code location merges one per policy (`POLICIES`)
with the domains' shared definitions (`definitions.py`): adding a policy is one line there, and nothing about one
policy is spread over modules that each loop over all of them."""

from dagster import Definitions

from rlhf_assets.defs.evaluation.checks import suite_checks
from rlhf_assets.defs.evaluation.suite import EvaluatedPolicy, evaluation_suite, overoptimisation_asset
from rlhf_assets.defs.human_eval.assets import human_eval_suite
from rlhf_assets.defs.human_eval.automation import labels_complete_sensor
from rlhf_assets.settings import DeploymentSettings


def policy_suite(policy: EvaluatedPolicy, settings: DeploymentSettings) -> Definitions:
    """The policy's evaluation and human evaluation, with their checks and automation."""
    prompt_sets = settings.prompt_set_names
    curve = [overoptimisation_asset(policy)] if policy.optimises_reward_model else []
    return Definitions(
        assets=[*evaluation_suite(policy, prompt_sets), *curve, *human_eval_suite(policy)],
        asset_checks=suite_checks(policy, prompt_sets, settings.blocking_checks),
        sensors=[labels_complete_sensor(policy)],
    )
