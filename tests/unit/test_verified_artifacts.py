"""Verify on read (issue 15, item 1): a stored artifact edited after publishing is refused by the next reader,
naming the file and both hashes, and re-materializing its asset repairs it."""

import json
import os
import shutil
import stat
from pathlib import Path

import pandas as pd
import pytest
from dagster import AssetKey, instance_for_test, materialize

from rlhf_assets.artifact_files import COMPLETE_MARKER, ArtifactIntegrityError, combined_hash, file_hashes
from rlhf_assets.compute.container import ContainerLayout
from rlhf_assets.contract import channel_env, input_hash_env
from rlhf_assets.steps.runtime import StepInputError, StepRuntime
from rlhf_assets.storage import ArtifactStore, Manifest
from tests.conftest import DATA_SNAPSHOTS, all_assets, artifact_dir, graph_resources, manifest_of

pytestmark = pytest.mark.unit


def test_a_tampered_file_is_refused_by_readers_and_named(tmp_path: Path) -> None:
    source = tmp_path / "model"
    source.mkdir()
    (source / "weights.bin").write_bytes(b"weights")
    (source / "config.json").write_text("{}")
    store = ArtifactStore(str(tmp_path / "store"))
    uri, _, _ = store.publish_directory(source, "sft_model")
    assert uri.startswith("sft_model/"), "manifests name artifacts relative to the root"
    stored = Path(store.resolve(uri))
    original = file_hashes(stored, skip=COMPLETE_MARKER)["weights.bin"]
    (stored / "weights.bin").write_bytes(b"WEIGHTS")  # same size, other bytes
    with pytest.raises(ArtifactIntegrityError, match=rf"weights\.bin hashes to [0-9a-f]{{64}}, published as "
                                                     rf"{original}; re-materialize"):
        store.local_path(uri)
    assert "weights.bin hashes to" in store.problem(uri)
    (stored / "weights.bin").write_bytes(b"weights")
    (stored / "extra.py").write_text("import os")
    with pytest.raises(ArtifactIntegrityError, match=r"extra\.py was not part of the published artifact"):
        store.local_path(uri)
    assert store.publish_directory(source, "sft_model")[0] == uri, "publishing the same content repairs it"
    assert store.problem(uri) is None and not (stored / "extra.py").exists()


def test_poisoned_hh_raw_stops_preference_dataset_and_rematerializing_repairs_it(shared_hh_path: Path,
                                                                                  tmp_path: Path) -> None:
    """The reproduction: edit `raw.parquet` inside a published `hh_raw`; the next `preference_dataset` used to
    read the poison under the original lineage, and re-materializing `hh_raw` was a no-op."""
    resources = graph_resources(tmp_path)
    selection = [*DATA_SNAPSHOTS, AssetKey("hh_raw"), AssetKey("preference_dataset")]
    with instance_for_test() as instance:
        assert materialize(all_assets, selection=selection, resources=resources, instance=instance).success
        raw = Path(ArtifactStore(str(tmp_path / "artifacts")).resolve(manifest_of(instance, tmp_path, "hh_raw").uri))
        raw = raw / "raw.parquet"
        frame = pd.read_parquet(raw)
        frame["chosen"] = frame["chosen"] + " POISON"
        frame.to_parquet(raw, index=False)
        poisoned = materialize(all_assets, selection=[AssetKey("preference_dataset")], resources=resources,
                               instance=instance, raise_on_error=False)
        assert not poisoned.success
        error = next(e for e in poisoned.all_events if e.event_type_value == "STEP_FAILURE")
        assert "raw.parquet hashes to" in error.step_failure_data.error.to_string()
        assert materialize(all_assets, selection=selection, resources=resources, instance=instance).success
        repaired = pd.read_parquet(artifact_dir(instance, tmp_path, "preference_dataset") / "train.parquet")
        assert not repaired["chosen"].str.contains("POISON").any()


def test_a_downloaded_channel_is_rehashed_against_its_recorded_lineage(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """What a SageMaker job does with each input channel before the step reads it: an edited file, or files and
    marker rewritten to agree with each other, fail against the content hash Dagster recorded."""
    source = tmp_path / "source"
    source.mkdir()
    (source / "train.parquet").write_bytes(b"rows")
    store = ArtifactStore(str(tmp_path / "store"))
    uri, content_hash, _ = store.publish_directory(source, "preference_dataset")
    channel = tmp_path / "input" / "data" / "preference"
    shutil.copytree(store.resolve(uri), channel)  # SageMaker's File-mode download of the prefix
    monkeypatch.setenv(channel_env("preference"), str(channel))
    monkeypatch.setenv(input_hash_env("preference"), content_hash)
    assert StepRuntime(sent={}, pipes=None).channel("preference") == channel

    (channel / "train.parquet").write_bytes(b"ROWS")
    with pytest.raises(StepInputError, match=r"input channel 'preference': train\.parquet hashes to"):
        StepRuntime(sent={}, pipes=None).channel("preference")
    forged = file_hashes(channel, skip=COMPLETE_MARKER)
    (channel / COMPLETE_MARKER).write_text(json.dumps({"content_hash": combined_hash(forged),
                                                       "files": sorted(forged), "hashes": forged}))
    with pytest.raises(StepInputError, match=rf"content hashes to [0-9a-f]{{64}}, published as {content_hash}"):
        StepRuntime(sent={}, pipes=None).channel("preference")


def test_an_unreadable_marker_is_a_problem_to_repair_not_a_crash(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    (source / "weights.bin").write_bytes(b"weights")
    store = ArtifactStore(str(tmp_path / "store"))
    uri, _, _ = store.publish_directory(source, "sft_model")
    (Path(store.resolve(uri)) / COMPLETE_MARKER).write_text("{not json")
    assert "marker is unreadable (JSONDecodeError" in store.problem(uri)
    assert store.publish_directory(source, "sft_model")[0] == uri and store.problem(uri) is None, "republish repairs"


def test_a_local_step_reads_its_own_verified_copy_not_the_live_store(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 28 (2): the Dagster side verified `ppo_policy`, then SFT's weights were swapped in before the step
    read them through its symlink, and eval_responses compared SFT with itself. Now the local backend stages a
    private copy (`ContainerLayout.create`) and the step re-hashes it against the recorded hash: a swap in the
    store after staging never reaches the step, and a copy staged from an already-swapped store is refused."""
    weights = tmp_path / "policy"
    weights.mkdir()
    (weights / "model.safetensors").write_bytes(b"ppo weights")
    store = ArtifactStore(str(tmp_path / "store"))
    uri, content_hash, _ = store.publish_directory(weights, "ppo_policy")
    published = store.verified_path(Manifest(asset="ppo_policy", uri=uri, content_hash=content_hash, preset="tiny"))
    layout = ContainerLayout.create(tmp_path / "run", tmp_path / "checkpoints", {"policy": published})
    for name, value in layout.environment({"policy": content_hash}, num_gpus=0).items():
        monkeypatch.setenv(name, value)
    channel = layout.channel_dir("policy")
    assert not channel.is_symlink() and stat.S_IMODE(channel.stat().st_mode) == 0o700

    swapped = published / "model.safetensors.swap"
    swapped.write_bytes(b"sft weights")
    os.replace(swapped, published / "model.safetensors")  # the attacker's swap, after the Dagster-side check
    assert StepRuntime(sent={}, pipes=None).channel("policy") == channel
    assert (channel / "model.safetensors").read_bytes() == b"ppo weights"

    staged_late = ContainerLayout.create(tmp_path / "run-2", tmp_path / "checkpoints", {"policy": published})
    monkeypatch.setenv(channel_env("policy"), str(staged_late.channel_dir("policy")))
    with pytest.raises(StepInputError, match=r"input channel 'policy': model\.safetensors hashes to"):
        StepRuntime(sent={}, pipes=None).channel("policy")
