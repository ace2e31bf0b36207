"""The evaluation assets and checks on the tiny preset with the shared HH and RealToxicityPrompts data."""

from pathlib import Path

import pandas as pd
import pytest
from dagster import AssetKey, materialize

from rlhf_assets.eval.degenerate_text import DEGENERATE_PROBES
from rlhf_assets.eval.toxicity import METRICS
from rlhf_assets.presets import TINY
from tests.conftest import (
    all_assets,
    all_checks,
    artifact_dir,
    forked_project,
    graph_resources,
    manifest_of,
    write_jsonl,
)
from tests.unit.test_rtp import rtp_record

pytestmark = pytest.mark.graph


def _metadata(instance, asset: str) -> dict:
    return instance.get_latest_materialization_event(AssetKey.from_user_string(asset)).asset_materialization.metadata


def test_every_check_runs_and_the_model_checks_pass_on_the_tiny_graph(graph) -> None:
    root, instance, result = graph
    evaluations = {(e.asset_key.to_user_string(), e.check_name): e.passed for e in result.get_asset_check_evaluations()}
    assert set(evaluations) == {(key.asset_key.to_user_string(), key.name) for c in all_checks for key in c.check_keys}
    toxicity = {asset: evaluations.pop((asset, name)) for asset, name in list(evaluations)
                if name == "toxicity_not_worse"}
    assert {"ppo_policy/toxicity_scores", "dpo_policy/toxicity_scores", "ppo_policy/red_team_toxicity_scores",
            "dpo_policy/red_team_toxicity_scores"} <= set(toxicity)
    assert all(evaluations.values()), evaluations
    # Whether a policy is shown no more toxic is a finding, not a given: each verdict must agree with its CIs, at
    # equal length and by both scorers (issue 26).
    margins = TINY.toxicity.margins
    for asset, passed in toxicity.items():
        metrics = manifest_of(instance, root, asset).metrics
        assert passed == all(metrics[f"{scorer}difference_{m}_lc_ci_high"] < getattr(margins, m)
                             for m in METRICS for scorer in ("", "second_")), asset


def test_stand_in_scorer_agrees_with_perspective_on_texts_it_never_saw(graph) -> None:
    root, instance, _ = graph
    metadata = _metadata(instance, "toxicity_model")
    assert metadata["heldout_roc_auc"].value > 0.8 and metadata["heldout_spearman"].value > 0.5
    assert "Stand-in scorer" in metadata["note"].value
    held_out = pd.read_parquet(artifact_dir(instance, root, "toxicity_model") / "heldout_scores.parquet")
    eval_prompts = set(pd.read_parquet(artifact_dir(instance, root, "rtp_prompts") / "prompts.parquet")["prompt_text"])
    assert not set(held_out["text"]) & eval_prompts


def test_toxicity_scores_follow_the_protocol_with_intervals(graph) -> None:
    root, instance, _ = graph
    scores = pd.read_parquet(artifact_dir(instance, root, "ppo_policy/toxicity_scores") / "scores.parquet")
    assert len(scores) == 200 * 2 * 2 and set(scores["model"]) == {"sft", "rlhf"}
    assert scores["toxicity"].between(0, 1).all()
    metrics = manifest_of(instance, root, "ppo_policy/toxicity_scores").metrics
    for name in ("sft_mean_toxicity", "rlhf_expected_max_toxicity", "difference_toxicity_probability"):
        assert metrics[f"{name}_ci_low"] <= metrics[name] <= metrics[f"{name}_ci_high"]
    by_model = scores.groupby("model")["toxicity"].mean()
    assert metrics["sft_mean_toxicity"] == pytest.approx(by_model["sft"])
    table = _metadata(instance, "ppo_policy/toxicity_scores")["toxicity_table"].value
    assert "| mean toxicity |" in table and "0.134" in table and "0.129" in table and "Stand-in" not in table
    assert "stand-in scorer" in table
    wordless = _metadata(instance, "ppo_policy/toxicity_scores")["wordless_continuations"].value
    assert "| sft |" in wordless and "| rlhf |" in wordless
    assert 0 <= metrics["rlhf_wordless_share"] <= 1


def test_the_stand_in_scorer_rates_text_without_words_as_non_toxic(graph) -> None:
    """Issue 16 (1): the old stand-in scored "." at 0.57; trained with wordless negatives it stays under 0.1."""
    root, instance, _ = graph
    probes = pd.read_parquet(artifact_dir(instance, root, "toxicity_model") / "degenerate_probes.parquet")
    assert set(probes["text"]) == set(DEGENERATE_PROBES)
    assert probes["detoxify_toxicity"].max() <= 0.1
    assert manifest_of(instance, root, "toxicity_model").metrics["heldout_roc_auc"] > 0.8


def test_eval_responses_and_automatic_preference(graph) -> None:
    root, instance, _ = graph
    responses = pd.read_parquet(artifact_dir(instance, root, "ppo_policy/eval_responses") / "responses.parquet")
    assert len(responses) == 100 and responses["prompt_id"].is_unique
    assert (responses["sft_response"] != responses["rlhf_response"]).mean() > 0.5
    assert len(_metadata(instance, "ppo_policy/eval_responses")["preview"].value.records) == 5
    counts = manifest_of(instance, root, "ppo_policy/auto_preference").counts
    assert counts["wins"] + counts["ties"] + counts["losses"] == 100
    outcomes = pd.read_parquet(artifact_dir(instance, root, "ppo_policy/auto_preference") / "outcomes.parquet")
    assert outcomes["outcome"].value_counts().to_dict() == {k: v for k, v in
                                                            (("win", counts["wins"]), ("tie", counts["ties"]),
                                                             ("loss", counts["losses"])) if v}
    outcomes_table = _metadata(instance, "ppo_policy/auto_preference")["outcomes"].value
    assert "recipe (human raters)" in outcomes_table and "reward model (optimised against)" in outcomes_table
    assert _metadata(instance, "ppo_policy/auto_preference")["judge"].value == "judge_model"


def test_the_judge_is_a_second_reward_model_trained_on_pairs_no_other_model_saw(graph) -> None:
    """Issue 16 (2): `auto_preference` used to judge with the reward model PPO maximised."""
    root, instance, _ = graph
    split = artifact_dir(instance, root, "preference_dataset")
    judge_pairs = pd.read_parquet(split / "judge_train.parquet")
    train, test = (pd.read_parquet(split / f"{name}.parquet") for name in ("train", "test"))
    assert len(judge_pairs) > 200
    assert not set(judge_pairs["prompt"]) & (set(train["prompt"]) | set(test["prompt"]))
    judge = manifest_of(instance, root, "judge_model")
    assert judge.config["train_split"] == "judge_train" and judge.counts["eval_pairs"] == 243
    assert judge.metrics["eval_accuracy"] > 0.5
    preference = manifest_of(instance, root, "ppo_policy/auto_preference")
    spread = pd.read_parquet(artifact_dir(instance, root, "ppo_policy/auto_preference") / "outcomes.parquet")
    scores = pd.concat([spread["sft_score"], spread["rlhf_score"]])
    assert preference.metrics["tie_margin_score"] == pytest.approx(0.25 * scores.std(ddof=0), rel=1e-6)
    assert 0 <= preference.metrics["sign_test_p"] <= 1


def test_a_policy_that_does_not_beat_sft_blocks_its_evaluation(graph, tmp_path: Path) -> None:
    """A learning rate too small to move the policy: PPO == SFT, so `ppo_beats_sft` fails and blocks."""
    root, _, _ = graph
    with forked_project(root, tmp_path) as instance:
        result = materialize(
            [*all_assets, *all_checks], selection=[AssetKey("ppo_policy"), AssetKey(["ppo_policy", "eval_responses"])],
            resources=graph_resources(tmp_path), instance=instance, raise_on_error=False,
            run_config={"ops": {"ppo_policy": {"config": {"learning_rate": 1e-12, "total_steps": 1}}}},
        )
        assert not result.success
        checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
        assert checks["ppo_beats_sft"] is False
        ppo_run = instance.get_latest_materialization_event(AssetKey("ppo_policy")).run_id
        assert ppo_run == result.run_id, "the policy is recorded; the check blocks what builds on it"
        eval_run = instance.get_latest_materialization_event(AssetKey(["ppo_policy", "eval_responses"])).run_id
        assert eval_run != result.run_id


def test_bad_toxicity_prompts_fail_clearly_and_keep_earlier_results(graph, tmp_path: Path) -> None:
    root, instance, _ = graph
    before = manifest_of(instance, root, "rtp_records")
    bad = write_jsonl(tmp_path / "rtp.jsonl", [rtp_record("fine"), rtp_record("bad", toxicity="very")])
    result = materialize(all_assets, selection=[AssetKey("rtp_records")], resources=graph_resources(root),
                         instance=instance, raise_on_error=False,
                         run_config={"ops": {"rtp_records": {"config": {"source": str(bad)}}}})
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "rtp.jsonl, line 2, field 'prompt.toxicity'" in str(failure.event_specific_data.error)
    assert manifest_of(instance, root, "rtp_records") == before
    assert before.counts["records"] == 2396


def test_challenging_only_prompts_and_a_configured_judge(graph, tmp_path: Path) -> None:
    root, graph_instance, _ = graph
    judge = str(artifact_dir(graph_instance, root, "reward_model"))
    with forked_project(root, tmp_path) as instance:
        result = materialize(
            all_assets, selection=[AssetKey("rtp_prompts"), AssetKey(["ppo_policy", "auto_preference"])],
            resources=graph_resources(tmp_path), instance=instance,
            run_config={"ops": {"rtp_prompts": {"config": {"num_prompts": 50, "challenging_only": True}},
                                "ppo_policy__auto_preference": {"config": {"judge": judge, "tie_margin": 0.5}}}},
        )
        assert result.success
        prompts = pd.read_parquet(artifact_dir(instance, tmp_path, "rtp_prompts") / "prompts.parquet")
        preference = manifest_of(instance, tmp_path, "ppo_policy/auto_preference")
    assert len(prompts) == 50 and prompts["challenging"].all() and prompts["prompt_text"].is_unique
    assert preference.config["evaluation"]["judge"] == judge and preference.config["evaluation"]["tie_margin"] == 0.5
    baseline = manifest_of(graph_instance, root, "ppo_policy/auto_preference")
    # The optimised-against reward model scores the same responses in both runs: 0.5 SD ties more than 0.25 SD.
    assert preference.counts["rm_ties"] > baseline.counts["rm_ties"], "a wider margin ties more"


def test_a_missing_detoxify_checkpoint_fails_naming_the_file(graph, tmp_path: Path) -> None:
    root, instance, _ = graph
    before = manifest_of(instance, root, "toxicity_model")
    missing = tmp_path / "toxic_original.ckpt"
    result = materialize(
        all_assets, selection=[AssetKey("toxicity_model")], resources=graph_resources(root), instance=instance,
        raise_on_error=False,
        run_config={"ops": {"toxicity_model": {"config": {"scorer": "checkpoint", "checkpoint": str(missing),
                                                          "huggingface_config_path": str(tmp_path)}}}},
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert f"{missing}: Detoxify checkpoint not found" in str(failure.event_specific_data.error)
    assert manifest_of(instance, root, "toxicity_model") == before


def test_every_evaluation_asset_opens_with_a_readable_summary(graph) -> None:
    """Issue 16 (5): a short markdown summary first (estimate [CI], n, seed, the recipe beside ours)."""
    _, instance, _ = graph
    for asset in ("ppo_policy", "ppo_policy/eval_responses", "toxicity_model", "ppo_policy/toxicity_scores",
                  "ppo_policy/auto_preference"):
        metadata = _metadata(instance, asset)
        assert next(iter(metadata)) == "summary", asset
        assert "0.0000" not in metadata["summary"].value, f"{asset}: digits the interval does not support"
    assert "Recipe: SFT 0.134, RLHF 0.129" in _metadata(instance, "ppo_policy/toxicity_scores")["summary"].value
    assert "Recipe (human raters): 30 / 54 / 16" in _metadata(instance, "ppo_policy/auto_preference")["summary"].value
