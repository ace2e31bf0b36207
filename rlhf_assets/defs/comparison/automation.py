"""Automation of the comparison: `policy_comparison` follows its suites (`suite.KEEP_CURRENT`), evaluated by its
own automation sensor (on by default), so a re-evaluated policy appears beside the others without a manual run."""

from dagster import AutomationConditionSensorDefinition, DefaultSensorStatus

from rlhf_assets.defs.comparison.assets import COMPARISON_KEY

comparison_automation = AutomationConditionSensorDefinition(
    "keep_policy_comparison_current", target=[COMPARISON_KEY], default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60, run_tags={"rlhf/trigger": "inputs_changed"},
    description="Compare the policies again when a policy or its evaluation suite is newer than the comparison.")
