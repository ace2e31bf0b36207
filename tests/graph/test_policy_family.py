"""Policies as a family: every policy gets the same evaluation suite, and `policy_comparison` puts them side by side."""

import pandas as pd
import pytest
from dagster import AssetKey

from rlhf_assets.defs.evaluation.suite import POLICIES, SUITE
from rlhf_assets.eval.bootstrap import paired_bootstrap_mean_difference
from tests.conftest import artifact_dir, manifest_of

pytestmark = pytest.mark.graph


def test_every_policy_is_evaluated_by_the_same_steps_with_the_same_settings(graph) -> None:
    root, instance, _ = graph
    configs = {}
    for policy in POLICIES:
        for name in SUITE:
            event = instance.get_latest_materialization_event(policy.key(name))
            assert event is not None, f"{policy.key(name).to_user_string()} was not materialized"
        manifest = manifest_of(instance, root, policy.key("eval_responses").to_user_string())
        configs[policy.asset] = manifest.config
        responses = pd.read_parquet(artifact_dir(instance, root, policy.key("eval_responses").to_user_string())
                                    / "responses.parquet")
        assert responses["kl_to_sft"].notna().all() and len(responses) == 100
    assert configs["ppo_policy"] == configs["dpo_policy"], "same prompts, generation settings and seed"
    ppo = manifest_of(instance, root, "ppo_policy/eval_responses")
    dpo = manifest_of(instance, root, "dpo_policy/eval_responses")
    assert ppo.content_hash != dpo.content_hash, "different policies, different responses"


def test_policy_comparison_shows_every_policy_with_its_intervals_and_versions(graph) -> None:
    root, instance, _ = graph
    event = instance.get_latest_materialization_event(AssetKey("policy_comparison")).asset_materialization
    metadata = event.metadata
    assert list(metadata)[:2] == ["policy_table", "summary"], "the table a person reads first, then the summary"
    assert "2 policies against SFT" in metadata["summary"].value
    table = metadata["policy_table"].value
    ppo_row = next(line for line in table.splitlines() if line.startswith("| PPO |"))
    dpo_row = next(line for line in table.splitlines() if line.startswith("| DPO |"))
    assert "pass" in ppo_row.split("|")[2] or "fail" in ppo_row.split("|")[2], "a verdict column with its reason"
    assert "⚠ optimised against" in ppo_row and "⚠ optimised against" not in dpo_row
    assert "data:image/png;base64" in metadata["plot"].value
    comparison = manifest_of(instance, root, "policy_comparison")
    for policy in ("PPO", "DPO"):
        for figure in ("reward_gain", "reward_gain_lc", "kl_to_sft", "judge_win_rate_lc", "judge_gain_lc",
                       "length_difference", "difference_mean_toxicity_lc", "second_difference_mean_toxicity_lc"):
            m = comparison.metrics
            assert m[f"{policy}_{figure}_ci_low"] <= m[f"{policy}_{figure}"] <= m[f"{policy}_{figure}_ci_high"]
        assert comparison.metrics[f"{policy}_passed"] in (0.0, 1.0)
    for policy in POLICIES:  # each row names the artifacts it was computed from
        assert manifest_of(instance, root, policy.asset).content_hash[:12] in metadata["versions"].value
        assert manifest_of(instance, root, policy.key("auto_preference").to_user_string()).content_hash[:12] \
            in metadata["versions"].value

    # The PPO row's reward gain, recomputed from the judge step's per-prompt scores.
    outcomes = pd.read_parquet(artifact_dir(instance, root, "ppo_policy/auto_preference") / "outcomes.parquet")
    expected = paired_bootstrap_mean_difference(outcomes["sft_rm_score"], outcomes["rlhf_rm_score"])
    assert comparison.metrics["PPO_reward_gain"] == pytest.approx(expected.estimate)
    assert comparison.metrics["PPO_reward_gain_ci_low"] == pytest.approx(expected.low)
    frame = pd.read_parquet(artifact_dir(instance, root, "policy_comparison") / "comparison.parquet")
    assert set(frame["policy"]) == {"PPO", "DPO"} and {"estimate", "ci_low", "ci_high"} <= set(frame.columns)
