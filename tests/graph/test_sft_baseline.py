"""SFT's side of every comparison is sampled once: both policies' suites read the same SFT responses and scored
continuations, and a policy evaluated with other sampling settings than SFT's samples is refused, by name."""

from pathlib import Path

import pandas as pd
import pytest
from dagster import AssetKey, materialize

from rlhf_assets.defs.evaluation.suite import POLICIES, sft_baseline_keys
from rlhf_assets.layouts import RESPONSES, SFT_RESPONSES, TOXICITY_SCORES
from tests.conftest import SETTINGS, all_assets, artifact_dir, forked_project, graph_resources, manifest_of

pytestmark = pytest.mark.graph
PPO_RESPONSES = AssetKey(["ppo_policy", "eval_responses"])


def test_every_policy_compares_against_the_same_sft_samples(graph) -> None:
    root, instance, result = graph
    materialized = [e.asset_key for e in result.get_asset_materialization_events()]
    baseline = sft_baseline_keys(SETTINGS.prompt_set_names)
    assert all(materialized.count(key) == 1 for key in baseline), "each sampled once per build"
    sft = SFT_RESPONSES.read(artifact_dir(instance, root, "sft_model/eval_responses")).set_index("prompt_id")
    for policy in POLICIES:
        name = policy.key("eval_responses").to_user_string()
        pairs = RESPONSES.read(artifact_dir(instance, root, name)).set_index("prompt_id")
        assert pairs["sft_response"].equals(sft.loc[pairs.index, "response"]), name
    for prompt_set in ("toxicity_scores", "red_team_toxicity_scores"):
        baseline = TOXICITY_SCORES.read(artifact_dir(instance, root, f"sft_model/{prompt_set}"))
        for policy in POLICIES:
            name = policy.key(prompt_set).to_user_string()
            scores = TOXICITY_SCORES.read(artifact_dir(instance, root, name))
            sft_rows = scores[scores["model"] == "sft"].reset_index(drop=True)
            pd.testing.assert_frame_equal(sft_rows, baseline.reset_index(drop=True), check_dtype=False)
            assert manifest_of(instance, root, name).metrics["sft_mean_toxicity"] == pytest.approx(
                baseline["toxicity"].mean())


def test_a_policy_sampled_with_another_seed_than_sfts_samples_is_refused(graph, tmp_path: Path) -> None:
    """A seed override on the policy's suite alone would compare two draws; the step names the setting and fix."""
    root, _, _ = graph
    with forked_project(root, tmp_path) as instance:
        before = manifest_of(instance, tmp_path, "ppo_policy/eval_responses")
        result = materialize(all_assets, selection=[PPO_RESPONSES], resources=graph_resources(tmp_path),
                             instance=instance, raise_on_error=False,
                             run_config={"ops": {"ppo_policy__eval_responses": {"config": {"generation_seed": 7}}}})
        assert not result.success
        failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
        message = failure.step_failure_data.error.to_string()
        assert "sft_model/eval_responses was sampled with other settings than this evaluation" in message
        assert "seed: SFT sampled with 0, this evaluation with 7" in message
        assert manifest_of(instance, tmp_path, "ppo_policy/eval_responses") == before
        both = {"config": {"generation_seed": 7}}
        again = materialize(all_assets, selection=[AssetKey(["sft_model", "eval_responses"]),
                                                   PPO_RESPONSES],
                            resources=graph_resources(tmp_path), instance=instance,
                            run_config={"ops": {"ppo_policy__eval_responses": both, "sft_model__eval_responses": both}})
        assert again.success, "the same override on both sides compares like with like"
