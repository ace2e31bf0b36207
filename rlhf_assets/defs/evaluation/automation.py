"""Automation of the evaluation side: evaluations kept current as their inputs change, and a scheduled re-evaluation.

Each policy's suite and curve and SFT's shared samples carry `suite.KEEP_CURRENT`, the comparison its own condition
(`comparison/assets.py`): Dagster's declarative automation. One automation sensor, `keep_evaluations_current` (on by
default), requests what an input change made stale, e.g. a policy's suite after a training run that stopped at the
policy, or SFT's samples and every suite after a new SFT. `scheduled_evaluation` (the cron of `RLHF_EVAL_CRON`,
nightly at 03:00 UTC by default; off until switched on in the UI) re-runs the evaluation of every policy and the
comparison; results that are unchanged (same policy, same data, same code) are reused, so an idle night costs
seconds.
"""

from dagster import (
    AssetSelection,
    AutomationConditionSensorDefinition,
    DagsterInvalidDefinitionError,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    ScheduleDefinition,
    define_asset_job,
)

from rlhf_assets.defs.common import COMPARISON_GROUP, EVALUATION_GROUP
from rlhf_assets.defs.evaluation.suite import POLICIES

EVALUATED = AssetSelection.groups(EVALUATION_GROUP, *(policy.group for policy in POLICIES), COMPARISON_GROUP)

evaluate_latest_policy = define_asset_job(
    "evaluate_latest_policy",
    selection=EVALUATED,
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


# One sensor evaluates every condition of the evaluation side (each policy's suite and curve, SFT's shared samples,
# the comparison) in one pass, so an update and everything it invalidates are requested together, in one run and
# in lineage order: a new SFT re-samples SFT's side before any suite reads it.
keep_evaluations_current = AutomationConditionSensorDefinition(
    "keep_evaluations_current", target=EVALUATED, default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60, run_tags={"rlhf/trigger": "inputs_changed"},
    description="Evaluate again what an input change made stale: each policy's suite and curve, SFT's shared "
                "samples and the comparison. Never trains a model.")
