"""The real asset graph on the tiny preset, materialized with Dagster's API (the session's build)."""

from pathlib import Path

import pandas as pd
import pytest
from dagster import AssetKey, DagsterInvalidConfigError, materialize

from rlhf_assets.eval.preference import wilson_interval
from tests.conftest import all_assets, artifact_dir, graph_resources, hh_row, manifest_of, write_jsonl

pytestmark = pytest.mark.graph
ASSETS = ["hh_raw", "preference_dataset", "eval_prompts", "base_model", "sft_model", "reward_model"]


def test_every_asset_materializes_with_ui_metadata(graph) -> None:
    root, instance, _ = graph
    for asset in ASSETS:
        event = instance.get_latest_materialization_event(AssetKey(asset))
        metadata = event.asset_materialization.metadata
        manifest = manifest_of(instance, root, asset)
        assert metadata["content_hash"].value == manifest.content_hash
        assert event.asset_materialization.tags["dagster/data_version"] == manifest.content_hash
        assert manifest.uri == f"{asset}/{manifest.content_hash[:16]}", "named relative to the artifact root"
    preference = instance.get_latest_materialization_event(AssetKey("preference_dataset")).asset_materialization
    assert preference.metadata["dropped_rows"].value == 9
    assert "dialogues_differ_before_last_turn | 5" in preference.metadata["dropped_by_reason"].value
    assert "whitespace-separated words" in preference.metadata["length_stats"].value
    assert len(preference.metadata["preview"].value.records) == 5
    sft = instance.get_latest_materialization_event(AssetKey("sft_model")).asset_materialization.metadata
    assert sft["eval_perplexity"].value > 1 and sft["tokens_per_second"].value > 0
    assert sft["parameter_count"].value > 1_000_000
    curve = sft["loss_curve"].value
    assert "data:image/png;base64" in curve and "| step | loss | eval_loss |" in curve


def test_reward_model_beats_chance_on_held_out_pairs(graph) -> None:
    root, instance, _ = graph
    """Beats chance by its 95% interval, not by a hand-picked accuracy: 243 held-out pairs resolve about ±0.062."""
    for asset in ("reward_model", "judge_model"):
        reward = manifest_of(instance, root, asset)
        assert reward.counts["eval_pairs"] == 243
        correct = round(reward.metrics["eval_accuracy"] * 243)
        assert wilson_interval(correct, 243).low > 0.5, f"{asset}: {correct} of 243 pairs"


def test_eval_prompts_are_held_out_from_training(graph) -> None:
    root, instance, _ = graph
    eval_frame = pd.read_parquet(artifact_dir(instance, root, "eval_prompts") / "eval_prompts.parquet")
    train = pd.read_parquet(artifact_dir(instance, root, "preference_dataset") / "train.parquet")
    assert len(eval_frame) == 100 and eval_frame["prompt"].is_unique
    assert set(eval_frame["prompt"]).isdisjoint(set(train["prompt"]))


def test_bad_source_fails_clearly_and_keeps_the_earlier_materialization(graph, tmp_path: Path) -> None:
    root, instance, _ = graph
    before = manifest_of(instance, root, "hh_raw")
    bad = write_jsonl(tmp_path / "bad.jsonl", [hh_row("a", "b", "c"), '{"chosen": "x", "rejected": '])
    result = materialize(all_assets, selection=[AssetKey("hh_raw")], resources=graph_resources(root),
                         instance=instance, raise_on_error=False,
                         run_config={"ops": {"hh_raw": {"config": {"source": str(bad)}}}})
    assert not result.success
    assert "bad.jsonl, line 2: malformed JSON" in _failure_text(result)
    assert manifest_of(instance, root, "hh_raw") == before
    assert artifact_dir(instance, root, "hh_raw").is_dir()


def _failure_text(result) -> str:
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    return failure.step_failure_data.error.to_string()


def test_unknown_preset_is_rejected_before_anything_runs(graph) -> None:
    root, instance, _ = graph
    with pytest.raises(DagsterInvalidConfigError, match="resources:preset:config:name not in enum type PresetName "
                                                         "got huge"):
        materialize(all_assets, selection=[AssetKey("hh_raw")], resources=graph_resources(root), instance=instance,
                    run_config={"resources": {"preset": {"config": {"name": "huge"}}}})


@pytest.mark.parametrize(
    ("asset", "config", "message"),
    [
        ("sft_model", {"epochs": -1.0}, "epochs\n  Input should be greater than 0"),
        ("preference_dataset", {"test_fraction": 1.5}, "test_fraction\n  Input should be less than 1"),
    ],
)
def test_out_of_range_config_names_the_field(graph, asset: str, config: dict, message: str) -> None:
    root, instance, _ = graph
    before = manifest_of(instance, root, asset)
    result = materialize(all_assets, selection=[AssetKey(asset)], resources=graph_resources(root), instance=instance,
                         raise_on_error=False, run_config={"ops": {asset: {"config": config}}})
    assert not result.success
    assert message in _failure_text(result)
    assert manifest_of(instance, root, asset) == before
