"""Operating it as users do: concurrent runs of the same asset against one persistent instance."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance

from rlhf_assets.presets import PROJECT_ROOT
from rlhf_assets.storage import Manifest, hash_directory

pytestmark = pytest.mark.integration


def _cli(env: dict[str, str], select: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dagster", "asset", "materialize", "-m", "rlhf_assets.definitions",
                             "--select", select], cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_two_concurrent_runs_of_the_same_asset_do_not_corrupt_each_other(tmp_path: Path, shared_hh_path: Path) -> None:
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home"), "RLHF_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
           "RLHF_SCRATCH_DIR": str(tmp_path / "scratch"), "RLHF_REUSE_RESULTS": "0", "RLHF_PRESET": "tiny"}
    (tmp_path / "home").mkdir()
    upstream = _cli(env, "hh_raw,preference_dataset")
    assert upstream.wait(timeout=300) == 0, upstream.stdout.read()[-3000:]

    runs = [_cli(env, "base_model") for _ in range(2)]  # the same work, at the same time
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert any("is computing the same work; waiting for it" in output for output in outputs)

    with DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        events = instance.fetch_materializations(AssetKey("base_model"), limit=10).records
        assert len(events) == 2
    manifest = Manifest.model_validate_json((tmp_path / "artifacts" / "manifests" / "base_model.json").read_text())
    directory = Path(manifest.uri)
    assert (directory / "_COMPLETE").exists()
    published = shutil.copytree(directory, tmp_path / "check", ignore=shutil.ignore_patterns("_COMPLETE"))
    assert hash_directory(published)[0] == manifest.content_hash  # the published artifact is whole and matches
    leftovers = [p for p in (tmp_path / "artifacts" / "base_model").iterdir() if p.name.startswith(".tmp-")]
    assert leftovers == []
