"""Operating it as users do: concurrent runs of one asset in one persistent instance, and a killed step."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from dagster import AssetKey, DagsterInstance

from rlhf_assets.artifact_files import hash_directory
from rlhf_assets.presets import PROJECT_ROOT
from tests.conftest import artifact_dir, copy_project, manifest_of

pytestmark = pytest.mark.graph


def _cli(env: dict[str, str], select: str, config: dict | None = None) -> subprocess.Popen:
    command = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "rlhf_assets.definitions",
               "--select", select]
    if config:
        command += ["--config-json", json.dumps(config)]
    return subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _env(tmp_path: Path, upstream: Path) -> dict[str, str]:
    """A CLI user's environment on a copy of the session's upstream project (data, base model)."""
    copy_project(upstream, tmp_path / "artifacts", tmp_path / "home")
    return {**os.environ, "DAGSTER_HOME": str(tmp_path / "home"), "RLHF_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
            "RLHF_SCRATCH_DIR": str(tmp_path / "scratch"), "RLHF_REUSE_RESULTS": "0", "RLHF_PRESET": "tiny"}


def test_two_concurrent_runs_of_the_same_asset_do_not_corrupt_each_other(tmp_path: Path, upstream: Path) -> None:
    env = _env(tmp_path, upstream)
    runs = [_cli(env, "base_model") for _ in range(2)]  # the same work, at the same time
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert any("is computing the same work; waiting for it" in output for output in outputs)

    with DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        events = instance.fetch_materializations(AssetKey("base_model"), limit=10).records
        assert len(events) == 3, "the copied upstream's, then one per run"
        manifest = manifest_of(instance, tmp_path, "base_model")
    directory = tmp_path / "artifacts" / manifest.uri
    assert (directory / "_COMPLETE").exists()
    published = shutil.copytree(directory, tmp_path / "check", ignore=shutil.ignore_patterns("_COMPLETE"))
    assert hash_directory(published)[0] == manifest.content_hash  # the published artifact is whole and matches
    leftovers = [p for p in (tmp_path / "artifacts" / "base_model").iterdir() if p.name.startswith(".tmp-")]
    assert leftovers == []


def test_a_step_killed_with_sigkill_leaves_nothing_valid_looking_and_the_rerun_resumes(tmp_path: Path,
                                                                                     upstream: Path) -> None:
    """SIGKILL the SFT step process mid-training: the run fails, nothing is published, the re-run resumes."""
    env = _env(tmp_path, upstream)

    small = {"ops": {"sft_model": {"config": {"max_train_rows": 320, "save_steps": 10}}}}  # 20 steps
    victim = _cli(env, "sft_model", small)
    checkpoints = tmp_path / "scratch" / "checkpoints" / "sft_model"
    deadline = time.monotonic() + 300
    while not list(checkpoints.glob("*/checkpoint-*/_COMPLETE.algo-1.json")):  # a checkpoint marked whole
        assert victim.poll() is None and time.monotonic() < deadline, "SFT ended before its first checkpoint"
        time.sleep(0.2)
    step = next(p for p in psutil.process_iter(["cmdline", "environ"]) if "rlhf_assets.steps.sft" in " ".join(
        p.info["cmdline"] or []) and (p.info["environ"] or {}).get("SM_MODEL_DIR", "").startswith(str(tmp_path)))
    step.send_signal(signal.SIGKILL)
    output = victim.communicate(timeout=300)[0]
    assert victim.returncode != 0, output[-3000:]
    assert not (tmp_path / "artifacts" / "manifests" / "sft_model").exists()
    published = tmp_path / "artifacts" / "sft_model"
    assert not published.exists() or not [p for p in published.iterdir() if (p / "_COMPLETE").exists()]

    rerun = _cli(env, "sft_model", small)
    output = rerun.communicate(timeout=900)[0]
    assert rerun.returncode == 0, output[-3000:]
    assert "resuming from" in output and "/checkpoint-" in output
    with DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        assert artifact_dir(instance, tmp_path, "sft_model").is_dir()
