"""Prompt sets on the tiny graph: the shipped red-team set evaluated for every policy, and a newly declared set
materialized beside the trained graph."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import AssetKey, materialize

from rlhf_assets.data.prompt_sets import PromptSetSpec
from rlhf_assets.defs.evaluation.checks import toxicity_not_worse
from rlhf_assets.defs.evaluation.prompt_sets import prompt_set_asset
from rlhf_assets.defs.evaluation.suite import POLICIES, sft_toxicity_asset, toxicity_asset
from rlhf_assets.eval.toxicity import METRICS
from rlhf_assets.layouts import TOXICITY_SCORES
from tests.conftest import all_assets, artifact_dir, forked_project, graph_resources, manifest_of

pytestmark = pytest.mark.graph


def test_the_red_team_set_is_evaluated_for_every_policy_with_recomputable_figures(graph) -> None:
    root, instance, _ = graph
    assert manifest_of(instance, root, "red_team_prompts").counts["prompts"] == 34
    for policy in POLICIES:
        name = policy.key("red_team_toxicity_scores").to_user_string()
        manifest = manifest_of(instance, root, name)
        assert manifest.config["prompt_set"] == "red_team" and manifest.counts["prompts"] == 34
        scores = TOXICITY_SCORES.read(artifact_dir(instance, root, name))
        k = manifest.config["toxicity"]["samples_per_prompt"]
        assert len(scores) == 34 * k * 2 and scores["toxicity"].between(0, 1).all()
        assert scores["second_toxicity"].between(0, 1).all(), "scored by the second scorer too"
        per_model = scores.groupby("model")["toxicity"].mean()
        assert manifest.metrics["sft_mean_toxicity"] == pytest.approx(per_model["sft"])
        assert manifest.metrics["difference_mean_toxicity"] == pytest.approx(per_model["rlhf"] - per_model["sft"])
        for metric in METRICS:
            assert manifest.metrics[f"difference_{metric}_ci_low"] <= manifest.metrics[f"difference_{metric}"] \
                <= manifest.metrics[f"difference_{metric}_ci_high"]
        table = instance.get_latest_materialization_event(policy.key("red_team_toxicity_scores")) \
            .asset_materialization.metadata["toxicity_table"].value
        assert "recipe" not in table, "the recipe reported RealToxicityPrompts only"
    comparison = instance.get_latest_materialization_event(AssetKey("policy_comparison")).asset_materialization
    by_set = comparison.metadata["toxicity_by_prompt_set"].value
    assert "| PPO | red_team | 34 |" in by_set and "| DPO | red_team | 34 |" in by_set
    assert "| PPO | rtp | 200 |" in by_set
    red_team_ppo = manifest_of(instance, root, "ppo_policy/red_team_toxicity_scores").metrics
    assert manifest_of(instance, root, "policy_comparison").metrics["PPO_red_team_difference_mean_toxicity_lc"] \
        == pytest.approx(red_team_ppo["difference_mean_toxicity_lc"])


def test_a_new_prompt_set_materializes_against_the_trained_policies(graph, tmp_path: Path) -> None:
    """What a user's reload does: the declared set's assets, materialized beside the existing graph."""
    root, _, _ = graph
    source = tmp_path / "greetings.txt"
    source.write_text("Hello there\nGood morning, how are\nTell me about your day\n", encoding="utf-8")
    spec = PromptSetSpec(name="greetings", source=str(source))
    added = [prompt_set_asset(spec), sft_toxicity_asset("greetings"), toxicity_asset(POLICIES[0], "greetings")]
    sft_side = AssetKey(["sft_model", "greetings_toxicity_scores"])
    check = toxicity_not_worse(AssetKey(["ppo_policy", "greetings_toxicity_scores"]))
    with forked_project(root, tmp_path / "fork") as instance:
        result = materialize([*all_assets, *added, check], instance=instance,
                             resources=graph_resources(tmp_path / "fork"),
                             selection=[AssetKey("greetings_prompts"), sft_side,
                                        AssetKey(["ppo_policy", "greetings_toxicity_scores"])])
        assert result.success
        manifest = manifest_of(instance, tmp_path / "fork", "ppo_policy/greetings_toxicity_scores")
    assert manifest.counts["prompts"] == 3 and manifest.config["prompt_set"] == "greetings"
    assert (manifest.config["toxicity"]["source"], manifest.config["toxicity"]["num_prompts"]) == (str(source), 3), \
        "issue 26 (8): the set's own source and count, not RealToxicityPrompts'"
    assert [e.check_name for e in result.get_asset_check_evaluations()] == ["toxicity_not_worse"]
    assert {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()} \
        == {"greetings_prompts", "sft_model/greetings_toxicity_scores", "ppo_policy/greetings_toxicity_scores"}, \
        "the policies and scorer come from the existing graph; SFT's side is sampled once for the new set"
