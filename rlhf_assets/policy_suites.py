"""Everything one policy gets, built by one function as one `Definitions`: its evaluation suite (eval responses,
toxicity on every prompt set, the judge's verdict, the over-optimisation curve for a policy trained against the
reward model), its human evaluation, the checks on both, and the sensors that keep them current. The code location
merges one per policy (`POLICIES`) with the shared graph (`definitions.py`): adding a policy is one line there, and
nothing about one policy is spread over modules that each loop over all of them."""

from __future__ import annotations

from dagster import Definitions

from rlhf_assets.assets.human_eval import human_eval_suite
from rlhf_assets.assets.policy_evaluation import EvaluatedPolicy, evaluation_suite, overoptimisation_asset
from rlhf_assets.automation import labels_complete_sensor, new_policy_sensor
from rlhf_assets.checks import suite_checks


def policy_suite(policy: EvaluatedPolicy) -> Definitions:
    """The policy's evaluation and human evaluation, with their checks and automation."""
    curve = [overoptimisation_asset(policy)] if policy.optimises_reward_model else []
    return Definitions(
        assets=[*evaluation_suite(policy), *curve, *human_eval_suite(policy)],
        asset_checks=suite_checks(policy),
        sensors=[new_policy_sensor(policy), labels_complete_sensor(policy)],
    )
