"""PPO with two processes (torch.distributed on CPU, gloo): sharded prompts, one reward model, synced weights,
and a resume from a checkpoint that reproduces the uninterrupted run exactly."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from rlhf_assets.presets import PROJECT_ROOT


def _launch(checkpoint_dir: Path, out: Path) -> list[dict]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "tests.ppo_distributed_worker", "--checkpoint-dir", str(checkpoint_dir), "--out", str(out)]
    done = subprocess.run(command, cwd=PROJECT_ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads((out / f"rank-{rank}.json").read_text()) for rank in (0, 1)]


def test_two_processes_share_prompts_and_stay_in_sync_and_resume_exactly(tmp_path: Path) -> None:
    ranks = _launch(tmp_path / "checkpoints", tmp_path / "straight")
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert all(r["distributed_type"] == "DistributedType.MULTI_CPU" for r in ranks)
    assert not set(ranks[0]["prompts"]) & set(ranks[1]["prompts"]), "each rank samples its own prompts"
    assert ranks[0]["weights"] == ranks[1]["weights"], "gradients are averaged: the replicas stay identical"
    assert ranks[0]["kl_coef"] == ranks[1]["kl_coef"] and ranks[0]["scores"] == ranks[1]["scores"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*")) == ["step-00000002", "step-00000004"]
    assert {p.name for p in (tmp_path / "checkpoints" / "step-00000002").glob("random_states_*")} == {
        "random_states_0.pkl", "random_states_1.pkl"}, "every rank's RNG state is saved"

    interrupted = tmp_path / "interrupted"
    interrupted.mkdir()
    shutil.copytree(tmp_path / "checkpoints" / "step-00000002", interrupted / "step-00000002")
    resumed = _launch(interrupted, tmp_path / "resumed")
    assert [r["resumed_from"] for r in resumed] == [2, 2] and [r["step"] for r in resumed] == [4, 4]
    for before, after in zip(ranks, resumed, strict=True):
        assert after["prompts"] == before["prompts"][4:], "the resumed run samples the prompts the first run did"
        assert after["weights"] == before["weights"], "the resumed run ends with the uninterrupted run's weights"
        assert after["kl_coef"] == before["kl_coef"]
