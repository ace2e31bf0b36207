"""Scheduled and policy-triggered re-evaluation, evaluated with Dagster's testing APIs, then run."""

from datetime import UTC, datetime

import pytest
from dagster import (
    AssetKey,
    Definitions,
    RunRequest,
    build_schedule_context,
    build_sensor_context,
    materialize,
)

from rlhf_assets.automation import build_evaluation_schedule, evaluate_latest_policy
from rlhf_assets.definitions import all_assets, all_checks, defs
from tests.conftest import graph_resources

pytestmark = pytest.mark.graph
SHARED = {"rtp_records", "rtp_prompts", "red_team_prompts", "toxicity_model", "policy_comparison",
          "sft_model/eval_responses", "sft_model/toxicity_scores", "sft_model/red_team_toxicity_scores"}
PPO_SUITE = {"eval_responses", "toxicity_scores", "red_team_toxicity_scores", "auto_preference"}
DPO_SUITE = {f"dpo_policy/{name}" for name in PPO_SUITE}
PPO_CURVE = {"overoptimisation_curve"}  # PPO is trained against the reward model; DPO is not
EVALUATION_ASSETS = SHARED | PPO_SUITE | DPO_SUITE | PPO_CURVE
evaluate_new_policy = defs.get_sensor_def("evaluate_new_policy")


def _tick(instance, cursor: str | None) -> tuple[list, str | None]:
    context = build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
    result = evaluate_new_policy.evaluate_tick(context)
    return [*result.run_requests, *([result.skip_message] if result.skip_message else [])], result.cursor


def test_schedule_requests_the_evaluation_job_on_its_cron(monkeypatch) -> None:
    schedule = build_evaluation_schedule()
    assert schedule.cron_schedule == "0 3 * * *" and schedule.job_name == "evaluate_latest_policy"
    context = build_schedule_context(scheduled_execution_time=datetime(2026, 11, 27, 3, tzinfo=UTC))
    requests = schedule.evaluate_tick(context).run_requests
    assert len(requests) == 1 and isinstance(requests[0], RunRequest)
    assert {k.to_user_string() for k in evaluate_latest_policy.selection.resolve(defs.resolve_asset_graph())} \
        == EVALUATION_ASSETS
    monkeypatch.setenv("RLHF_EVAL_CRON", "*/30 * * * *")
    assert build_evaluation_schedule().cron_schedule == "*/30 * * * *"
    monkeypatch.setenv("RLHF_EVAL_CRON", "nightly please")
    with pytest.raises(ValueError, match="RLHF_EVAL_CRON='nightly please' is not a valid cron expression"):
        build_evaluation_schedule()


def test_new_policy_triggers_evaluation_and_the_job_runs(graph) -> None:
    root, instance, _ = graph
    results, cursor = _tick(instance, None)
    assert len(results) == 1 and "already evaluated" in results[0], "the graph run evaluated its own policy"

    assert materialize(all_assets, selection=[AssetKey("ppo_policy")], resources=graph_resources(root),
                       instance=instance).success
    results, cursor = _tick(instance, cursor)
    assert len(results) == 1 and isinstance(results[0], RunRequest)
    assert results[0].tags["rlhf/trigger"] == "new_policy" and results[0].tags["rlhf/policy"] == "ppo_policy"
    requested = {k.to_user_string() for k in results[0].asset_selection}
    assert requested == SHARED | PPO_SUITE | PPO_CURVE, "a new PPO policy re-evaluates PPO's suite, not DPO's"

    job = Definitions(assets=all_assets, asset_checks=all_checks, jobs=[evaluate_latest_policy],
                      resources=graph_resources(root)).get_job_def("evaluate_latest_policy")
    run = job.execute_in_process(instance=instance, tags=results[0].tags, asset_selection=results[0].asset_selection)
    assert run.success
    materialized = {e.asset_key.to_user_string() for e in run.get_asset_materialization_events()}
    assert materialized == SHARED | PPO_SUITE | PPO_CURVE
    latest = instance.get_latest_materialization_event(AssetKey("toxicity_scores")).asset_materialization
    assert "reused_from_run" in latest.metadata, "same policy, data and code: the scores are reused, not recomputed"

    results, _ = _tick(instance, cursor)
    assert not any(isinstance(r, RunRequest) for r in results), "no policy newer than the cursor: nothing requested"

