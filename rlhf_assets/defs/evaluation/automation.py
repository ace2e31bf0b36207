"""Automation of the evaluation domain: every policy's suite kept current, and a scheduled re-evaluation.

Each policy's suite assets carry `suite.KEEP_CURRENT` (Dagster's declarative automation): one automation sensor per
policy (`evaluate_ppo_policy`, `evaluate_dpo_policy`, ...; on by default) requests the suite, and the over-
optimisation curve where the policy has one, once an input is newer than the evaluation, e.g. after a training run
that stopped at the policy. `scheduled_evaluation` (the cron of `RLHF_EVAL_CRON`, nightly at 03:00 UTC by default;
off until switched on in the UI) re-runs the evaluation of every policy and the comparison; results that are
unchanged (same policy, same data, same code) are reused, so an idle night costs seconds.
"""

from collections.abc import Sequence

from dagster import (
    AssetSelection,
    AutomationConditionSensorDefinition,
    DagsterInvalidDefinitionError,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    ScheduleDefinition,
    define_asset_job,
)

from rlhf_assets.defs.evaluation.prompt_sets import EVALUATION_GROUP
from rlhf_assets.defs.evaluation.suite import POLICIES, EvaluatedPolicy, curve_keys, suite_keys

COMPARISON_GROUP = "comparison"

evaluate_latest_policy = define_asset_job(
    "evaluate_latest_policy",
    selection=AssetSelection.groups(EVALUATION_GROUP, *(policy.group for policy in POLICIES), COMPARISON_GROUP),
    description="Eval responses, toxicity and automatic preference of the latest version of every policy against "
                "SFT, and the policy comparison.",
)


def evaluation_schedule(cron: str) -> ScheduleDefinition:
    """The periodic re-evaluation on `cron` (`RLHF_EVAL_CRON`), refused when the code location loads if invalid."""
    try:
        return ScheduleDefinition(
            name="scheduled_evaluation", job=evaluate_latest_policy, cron_schedule=cron,
            execution_timezone="UTC", default_status=DefaultScheduleStatus.STOPPED,
            description=f"Re-evaluate the latest version of every policy on cron {cron!r} (RLHF_EVAL_CRON).",
        )
    except DagsterInvalidDefinitionError:
        raise ValueError(f"RLHF_EVAL_CRON={cron!r} is not a valid cron expression (e.g. '0 3 * * *')") from None


def suite_automation(policy: EvaluatedPolicy, prompt_sets: Sequence[str]) -> AutomationConditionSensorDefinition:
    """The sensor that evaluates `policy`'s suite's automation conditions: its own, so one policy's automation can
    be paused in the UI without pausing another's."""
    return AutomationConditionSensorDefinition(
        f"evaluate_{policy.asset}", target=[*suite_keys(policy, prompt_sets), *curve_keys(policy)],
        default_status=DefaultSensorStatus.RUNNING, minimum_interval_seconds=60,
        run_tags={"rlhf/trigger": "inputs_changed", "rlhf/policy": policy.asset},
        description=f"Evaluate {policy.asset} again when an input of its suite is newer than the evaluation (its "
                    "suite, and its over-optimisation curve where it has one).")
