"""`small` in miniature: the whole graph as the preset configures it (Pythia, rm-static with its own held-out
split, TRL-trained reward model, published Detoxify, real RTP), offline against the hub mirror, with only sizes
shrunk, through the local backend."""

import json
from pathlib import Path

import pandas as pd
import pytest
from dagster import AssetKey, AssetSelection, materialize

from rlhf_assets.defs.human_eval.assets import WAITS_FOR_PEOPLE
from rlhf_assets.miniature.mirror import RM_STATIC_FILES, mirror_environment
from rlhf_assets.resources import PresetResource
from tests.conftest import all_assets, artifact_dir, graph_resources, manifest_of, project_instance

pytestmark = pytest.mark.graph


@pytest.fixture(scope="module")
def small_miniature(tmp_path_factory: pytest.TempPathFactory, hub_mirror: Path):
    root = tmp_path_factory.mktemp("small-miniature")
    resources = {**graph_resources(root), "preset": PresetResource(name="small", miniature=True)}
    selection = AssetSelection.all() - AssetSelection.tag(*WAITS_FOR_PEOPLE)
    with pytest.MonkeyPatch.context() as patch, project_instance(root) as instance:
        for name, value in mirror_environment(hub_mirror).items():
            patch.setenv(name, value)
        result = materialize(all_assets, selection=selection, resources=resources, instance=instance)
        yield root, instance, result


def test_the_whole_small_graph_materializes_offline_as_configured(small_miniature, hub_mirror: Path) -> None:
    root, instance, result = small_miniature
    assert result.success
    commits = json.loads((hub_mirror / "mirror.json").read_text())["commits"]
    for role, repo in (("base_model", "models/EleutherAI/pythia-160m"),
                       ("preference_data", "datasets/Dahoas/rm-static"),
                       ("toxicity_prompts", "datasets/allenai/real-toxicity-prompts")):
        event = instance.get_latest_materialization_event(AssetKey(["hub_snapshots", role])).asset_materialization
        assert event.metadata["commit"].value == commits[repo], role
    base = artifact_dir(instance, root, "base_model")
    assert json.loads((base / "base_model.json").read_text())["kind"] == "local", "weights come from the snapshot"
    assert (base / "model.safetensors").exists()
    reward = json.loads((artifact_dir(instance, root, "reward_model") / "reward_model.json").read_text())
    assert reward["readout"]["rule"] == "eos"
    for asset in ("ppo_policy", "dpo_policy", "policy_comparison", "ppo_policy/toxicity_scores",
                  "ppo_policy/auto_preference"):
        assert manifest_of(instance, root, asset).content_hash


def test_held_out_prompts_come_from_rm_statics_test_split(small_miniature, hub_mirror: Path) -> None:
    root, instance, _ = small_miniature
    snapshot = artifact_dir(instance, root, "hub_snapshots/preference_data") / "files"
    heldout = set(pd.read_parquet(snapshot / RM_STATIC_FILES["test"])["prompt"])
    splits = artifact_dir(instance, root, "preference_dataset")
    test, judge = (set(pd.read_parquet(splits / f"{name}.parquet")["prompt"]) for name in ("test", "judge_train"))
    train = set(pd.read_parquet(splits / "train.parquet")["prompt"])
    assert test and judge and test | judge <= heldout and not train & heldout
    eval_prompts = set(pd.read_parquet(artifact_dir(instance, root, "eval_prompts") / "eval_prompts.parquet")["prompt"])
    assert eval_prompts <= test
