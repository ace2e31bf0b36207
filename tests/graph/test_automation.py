"""Scheduled and declarative re-evaluation, evaluated with Dagster's testing APIs, then run."""

from datetime import UTC, datetime

import pytest
from dagster import (
    AssetKey,
    AutomationConditionSensorDefinition,
    Definitions,
    RunRequest,
    build_schedule_context,
    evaluate_automation_conditions,
    materialize,
)

from rlhf_assets.defs.evaluation.automation import evaluate_latest_policy, evaluation_schedule
from rlhf_assets.defs.evaluation.suite import KEEP_CURRENT
from rlhf_assets.settings import DEFAULT_CRON
from tests.conftest import DEFINITIONS, all_assets, all_checks, graph_resources

pytestmark = pytest.mark.graph
SHARED = {"rtp_records", "rtp_prompts", "red_team_prompts", "toxicity_model", "policy_comparison",
          "sft_model/eval_responses", "sft_model/toxicity_scores", "sft_model/red_team_toxicity_scores"}
SUITE = ("eval_responses", "toxicity_scores", "red_team_toxicity_scores", "auto_preference")
PPO_SUITE = {f"ppo_policy/{name}" for name in SUITE}
DPO_SUITE = {f"dpo_policy/{name}" for name in SUITE}
PPO_CURVE = {"ppo_policy/overoptimisation_curve"}  # PPO is trained against the reward model; DPO is not
EVALUATION_ASSETS = SHARED | PPO_SUITE | DPO_SUITE | PPO_CURVE


def test_schedule_requests_the_evaluation_job_on_its_cron() -> None:
    schedule = evaluation_schedule(DEFAULT_CRON)
    assert schedule.cron_schedule == "0 3 * * *" and schedule.job_name == "evaluate_latest_policy"
    context = build_schedule_context(scheduled_execution_time=datetime(2026, 11, 27, 3, tzinfo=UTC))
    requests = schedule.evaluate_tick(context).run_requests
    assert len(requests) == 1 and isinstance(requests[0], RunRequest)
    assert {k.to_user_string() for k in evaluate_latest_policy.selection.resolve(DEFINITIONS.resolve_asset_graph())} \
        == EVALUATION_ASSETS
    assert evaluation_schedule("*/30 * * * *").cron_schedule == "*/30 * * * *"
    with pytest.raises(ValueError, match="RLHF_EVAL_CRON='nightly please' is not a valid cron expression"):
        evaluation_schedule("nightly please")


def test_each_suite_and_the_comparison_are_kept_current_declaratively_and_training_never_is() -> None:
    """Declarative automation replaces the hand-written new-policy sensors: the condition sits on each suite asset,
    one automation sensor per policy (and one for the comparison) evaluates it, and no model is ever trained by
    automation (a GPU run is always somebody's decision)."""
    graph = DEFINITIONS.resolve_asset_graph()
    conditioned = {node.key.to_user_string() for node in graph.asset_nodes if node.automation_condition is not None}
    assert conditioned == PPO_SUITE | DPO_SUITE | PPO_CURVE | {"policy_comparison"}
    assert all(graph.get(AssetKey.from_user_string(key)).automation_condition == KEEP_CURRENT for key in conditioned)
    sensors = {s.name: s for s in DEFINITIONS.sensors or () if isinstance(s, AutomationConditionSensorDefinition)}
    targets = {name: {k.to_user_string() for k in s.asset_selection.resolve(graph)} for name, s in sensors.items()}
    assert targets == {"evaluate_ppo_policy": PPO_SUITE | PPO_CURVE, "evaluate_dpo_policy": DPO_SUITE,
                       "keep_policy_comparison_current": {"policy_comparison"}}


def test_a_new_policy_is_evaluated_by_its_automation_and_the_run_works(graph) -> None:
    root, instance, _ = graph
    first = evaluate_automation_conditions(defs=DEFINITIONS, instance=instance)
    assert first.total_requested == 0, "the graph run evaluated its own policies: nothing is newer than them"

    assert materialize([*all_assets, *all_checks], selection=[AssetKey("ppo_policy")],
                       resources=graph_resources(root), instance=instance).success
    after = evaluate_automation_conditions(defs=DEFINITIONS, instance=instance, cursor=first.cursor)
    requested = {node.key.to_user_string() for node in DEFINITIONS.resolve_asset_graph().asset_nodes
                 if after.get_num_requested(node.key)}
    assert requested == PPO_SUITE | PPO_CURVE | {"policy_comparison"}, \
        "a new PPO policy (its blocking checks passed) re-evaluates PPO's suite and the comparison, not DPO's"

    job = Definitions(assets=all_assets, asset_checks=all_checks, jobs=[evaluate_latest_policy],
                      resources=graph_resources(root)).get_job_def("evaluate_latest_policy")
    run = job.execute_in_process(instance=instance, asset_selection=[AssetKey.from_user_string(k) for k in requested])
    assert run.success
    assert {e.asset_key.to_user_string() for e in run.get_asset_materialization_events()} == requested
    latest = instance.get_latest_materialization_event(AssetKey(["ppo_policy", "toxicity_scores"]))
    assert "reused_from_run" in latest.asset_materialization.metadata, \
        "same policy, data and code: the scores are reused, not recomputed"

    settled = evaluate_automation_conditions(defs=DEFINITIONS, instance=instance, cursor=after.cursor)
    assert settled.total_requested == 0, "everything is as new as its inputs: nothing requested"
