"""Reuse cannot be forged: a step result is reused only as the Dagster instance recorded it, and a store record that
points anywhere else, or is damaged, makes the step run again instead of failing the asset."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance, materialize

from rlhf_assets.defs.reuse import ResultRecord, recorded_result
from rlhf_assets.storage import RESULTS_DIR, ArtifactStore
from tests.conftest import all_assets, forked_project, graph_resources, manifest_of

pytestmark = pytest.mark.graph

ASSET = "base_model"


@pytest.fixture
def project(tmp_path: Path, upstream: Path) -> Iterator[tuple[Path, DagsterInstance]]:
    with forked_project(upstream, tmp_path) as instance:
        yield tmp_path, instance


def _record(root: Path) -> Path:
    """The store's reuse record of base_model's work (the only one the upstream project wrote for it)."""
    records = [path for path in (root / "artifacts" / RESULTS_DIR).glob("*.json")
               if json.loads(path.read_text()).get("asset") == ASSET]
    assert len(records) == 1
    return records[0]


def _materialize(root: Path, instance: DagsterInstance, config: dict | None = None) -> tuple[dict, list[str]]:
    """Materialize base_model; its metadata and the warnings logged."""
    result = materialize(all_assets, selection=[AssetKey(ASSET)], resources=graph_resources(root),
                         instance=instance, run_config={"ops": {ASSET: {"config": config or {}}}})
    assert result.success
    event = result.get_asset_materialization_events()[0].step_materialization_data.materialization
    warnings = [entry.user_message for entry in instance.all_logs(result.run_id)
                if entry.level >= 30 and not entry.is_dagster_event]
    return {name: value.value for name, value in event.metadata.items()}, warnings


def test_a_genuine_record_is_reused(project) -> None:
    root, instance = project
    metadata, warnings = _materialize(root, instance)
    genuine = instance.get_runs()[-1].run_id  # the upstream run, the instance's oldest
    assert metadata["reused_from_run"] == genuine and not warnings


def test_a_record_pointing_at_a_forged_copy_is_ignored(project) -> None:
    """The attack: an internally consistent copy with edited content, and the record pointed at it (the old
    format carried the manifest itself); the step runs again and the genuine content comes back."""
    root, instance = project
    genuine = manifest_of(instance, root, ASSET)
    store = ArtifactStore(str(root / "artifacts"))
    forged_dir = shutil.copytree(store.local_path(genuine.uri), root / "forged",
                                 ignore=shutil.ignore_patterns("_COMPLETE"))
    (forged_dir / "config.json").write_text((forged_dir / "config.json").read_text().replace("{", '{"forged": 1, ', 1))
    uri, content_hash, files = store.publish_directory(forged_dir, ASSET)
    forged = genuine.model_copy(update={"uri": uri, "content_hash": content_hash, "files": files})
    record = _record(root)
    run_id = json.loads(record.read_text())["run_id"]
    record.write_text(json.dumps({"manifest": forged.model_dump_json(), "metadata": {}, "run_id": run_id}))

    metadata, warnings = _materialize(root, instance)
    assert "reused_from_run" not in metadata
    assert any("not reusing the stored result" in warning and "unreadable" in warning for warning in warnings)
    assert manifest_of(instance, root, ASSET).content_hash == genuine.content_hash != content_hash


def test_a_record_naming_another_run_or_other_work_is_ignored(project) -> None:
    """Real runs, but not of this work: one that never materialized the asset (end to end), and the genuine run
    asked for under another reuse key (what a record copied to another work's name would claim)."""
    root, instance = project
    genuine_run = instance.get_runs()[-1].run_id
    assert materialize(all_assets, selection=[AssetKey("hh_raw")], resources=graph_resources(root),
                       instance=instance).success
    record = _record(root)
    record.write_text(json.dumps({"run_id": instance.get_runs(limit=1)[0].run_id, "asset": ASSET}))
    metadata, warnings = _materialize(root, instance)
    assert "reused_from_run" not in metadata
    assert any("recorded no materialization of base_model" in warning for warning in warnings)

    store = ArtifactStore(str(root / "artifacts"))
    claimed = recorded_result(instance, store, AssetKey(ASSET), "0" * 64, ResultRecord(run_id=genuine_run, asset=ASSET),
                              str(root / "artifacts" / "manifests"))
    assert isinstance(claimed, str) and "was not this work" in claimed


@pytest.mark.parametrize("damage", [b'{"run_id": "abc', b'{"run_id": "a\x00b", "asset": 1}', b"\xff\xfe\x00garbage",
                                    b'{"run_id": "../../../../tmp/planted", "asset": "base_model"}'],
                         ids=["truncated", "nul", "binary", "path-as-run-id"])
def test_a_damaged_record_recomputes_instead_of_failing(project, damage: bytes) -> None:
    root, instance = project
    genuine = manifest_of(instance, root, ASSET)
    _record(root).write_bytes(damage)
    metadata, warnings = _materialize(root, instance)
    assert "reused_from_run" not in metadata
    assert any("unreadable" in warning for warning in warnings)
    assert manifest_of(instance, root, ASSET).content_hash == genuine.content_hash


def test_a_manifest_edited_under_a_genuine_record_is_not_reused(project) -> None:
    root, instance = project
    genuine = manifest_of(instance, root, ASSET)
    event = instance.get_latest_materialization_event(AssetKey(ASSET))
    name = event.asset_materialization.metadata["manifest"].value
    path = root / "artifacts" / "manifests" / name
    path.write_text(path.read_text().replace('"preset": "tiny"', '"preset": "gptj_6b"'))
    metadata, warnings = _materialize(root, instance)
    assert "reused_from_run" not in metadata
    assert any("no longer hashes to its name" in warning for warning in warnings)
    assert manifest_of(instance, root, ASSET).content_hash == genuine.content_hash
