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
from tests.conftest import DEFINITIONS, all_assets, all_checks, forked_project, graph_resources

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


def test_evaluations_are_kept_current_declaratively_and_training_never_is() -> None:
    """Declarative automation replaces the hand-written new-policy sensors: the condition sits on each suite asset
    and on SFT's shared samples (the comparison has its own), one sensor evaluates them all together, and no model
    is ever trained by automation (a GPU training run is always somebody's decision)."""
    graph = DEFINITIONS.resolve_asset_graph()
    conditions = {node.key.to_user_string(): node.automation_condition for node in graph.asset_nodes
                  if node.automation_condition is not None}
    sft_side = {key for key in SHARED if key.startswith("sft_model/")}
    assert set(conditions) == PPO_SUITE | DPO_SUITE | PPO_CURVE | sft_side | {"policy_comparison"}
    assert all(conditions[key] == KEEP_CURRENT for key in set(conditions) - {"policy_comparison"})
    sensors = [s for s in DEFINITIONS.sensors or () if isinstance(s, AutomationConditionSensorDefinition)]
    assert [s.name for s in sensors] == ["keep_evaluations_current"]
    assert set(conditions) <= {k.to_user_string() for k in sensors[0].asset_selection.resolve(graph)}


def _evaluate(instance, cursor):
    """One tick of the automation sensor, as the daemon evaluates it: its own selection, in one pass."""
    sensor = DEFINITIONS.get_sensor_def("keep_evaluations_current")
    result = evaluate_automation_conditions(defs=DEFINITIONS, instance=instance, cursor=cursor,
                                            asset_selection=sensor.asset_selection)
    requested = {node.key.to_user_string() for node in DEFINITIONS.resolve_asset_graph().asset_nodes
                 if result.get_num_requested(node.key)}
    return requested, result.cursor


def test_a_new_policy_is_evaluated_by_the_automation_and_the_run_works(graph) -> None:
    root, instance, _ = graph
    run_everything = {"ppo_policy", *PPO_SUITE, *PPO_CURVE, "policy_comparison"}
    _, cursor = _evaluate(instance, None)  # the first tick only starts the cursor
    assert materialize([*all_assets, *all_checks], selection=[AssetKey.from_user_string(k) for k in run_everything],
                       resources=graph_resources(root), instance=instance).success
    requested, cursor = _evaluate(instance, cursor)
    assert requested == set(), "a run that trained the policy and evaluated it leaves nothing stale"

    assert materialize([*all_assets, *all_checks], selection=[AssetKey("ppo_policy")],
                       resources=graph_resources(root), instance=instance).success
    requested, cursor = _evaluate(instance, cursor)
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

    requested, _ = _evaluate(instance, cursor)
    assert requested == set(), "everything is as new as its inputs: nothing requested"


def test_a_new_sft_requests_its_samples_and_every_suite_in_one_tick(graph, tmp_path) -> None:
    """A new SFT makes SFT's shared samples stale and, through them, every policy's suite: the one sensor requests
    them together, so one run re-samples SFT's side (upstream in that run) before any suite reads it."""
    root, _, _ = graph
    with forked_project(root, tmp_path / "fork") as instance:
        _, cursor = _evaluate(instance, None)
        assert materialize(all_assets, selection=[AssetKey("sft_model")], resources=graph_resources(tmp_path / "fork"),
                           instance=instance).success
        requested, _ = _evaluate(instance, cursor)
    sft_side = {key for key in SHARED if key.startswith("sft_model/")}
    assert requested == sft_side | PPO_SUITE | DPO_SUITE | PPO_CURVE | {"policy_comparison"}, \
        "SFT's samples, both suites, PPO's curve and the comparison; never a policy (training stays a decision)"
