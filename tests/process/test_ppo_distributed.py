"""PPO with two processes (torch.distributed on CPU, gloo): sharded prompts, one reward model, synced weights,
and a resume from a checkpoint that reproduces the uninterrupted run exactly."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from rlhf_assets.checkpoint_integrity import write_marker
from rlhf_assets.modeling.restricted_load import DEEPSPEED_STATE_CLASSES, restricted_load
from rlhf_assets.ppo.checkpoint import latest_checkpoint, staging_root
from rlhf_assets.presets import PROJECT_ROOT

pytestmark = pytest.mark.process


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


def _launch_two_hosts(disks: dict[str, Path], out: Path) -> list[dict]:
    """One rank on each of two emulated SageMaker hosts (`SM_HOSTS`/`SM_CURRENT_HOST`), each with its own
    checkpoint disk, rendezvousing over loopback as torchrun does across nodes."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    hosts = list(disks)
    runs = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(index),
         "--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port", str(port),
         "-m", "tests.ppo_distributed_worker", "--checkpoint-dir", str(disks[host]), "--out", str(out)],
        cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "SM_HOSTS": json.dumps(hosts), "SM_CURRENT_HOST": host})
        for index, host in enumerate(hosts)]
    outputs = [run.communicate(timeout=300)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    return [json.loads((out / f"rank-{rank}.json").read_text()) for rank in (0, 1)]


def test_two_hosts_commit_their_own_checkpoint_parts_and_resume_from_the_restored_union(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hosts = ["algo-1", "algo-2"]
    monkeypatch.setenv("SM_HOSTS", json.dumps(hosts))
    disks = {host: tmp_path / "disks" / host for host in hosts}
    straight = _launch_two_hosts(disks, tmp_path / "straight")
    for host, disk in disks.items():
        assert not list(disk.glob(".tmp-*")), f"{host} left its staging uncommitted"
        assert not [p for p in staging_root(disk).rglob("*") if p.is_file()], f"{host} left staged files"
        assert [p.name for p in disk.glob("step-*/_COMPLETE.*.json")] == [f"_COMPLETE.{host}.json"] * 2
    assert {p.name for p in disks["algo-2"].glob("step-00000002/random_states_*")} == {"random_states_1.pkl"}
    assert latest_checkpoint(disks["algo-1"]) is None, "one host's part alone is not a checkpoint"

    restored = {host: tmp_path / "restored" / host for host in hosts}  # SageMaker restores the union everywhere
    for target in restored.values():
        for disk in disks.values():
            shutil.copytree(disk / "step-00000002", target / "step-00000002", dirs_exist_ok=True)
    assert latest_checkpoint(restored["algo-2"]) == restored["algo-2"] / "step-00000002"
    resumed = _launch_two_hosts(restored, tmp_path / "resumed")
    assert [r["resumed_from"] for r in resumed] == [2, 2] and [r["step"] for r in resumed] == [4, 4]
    for before, after in zip(straight, resumed, strict=True):
        assert after["weights"] == before["weights"] and after["kl_coef"] == before["kl_coef"]


class _Payload:
    """What an attacker who can write the checkpoint prefix plants: unpickling it runs a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _launch_zero2(checkpoint_dir: Path, out: Path, total_steps: int) -> subprocess.CompletedProcess:
    """The worker as the recipe launches PPO: `accelerate launch` with its DeepSpeed ZeRO-2 bf16 config (one
    process, DeepSpeed's CPU accelerator over gloo)."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--config_file",
               str(PROJECT_ROOT / "rlhf_assets" / "compute" / "accelerate" / "zero2_bf16.yaml"),
               "-m", "tests.ppo_distributed_worker", "--checkpoint-dir", str(checkpoint_dir), "--out", str(out),
               "--total-steps", str(total_steps)]
    return subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_a_payload_planted_in_a_zero2_optimizer_file_never_runs(tmp_path: Path) -> None:
    """Issue 28 (3): DeepSpeed reads its optimizer files with the full unpickler. Every file of a genuine ZeRO-2
    checkpoint loads through the restricted loader; a resume whose `optim_states.pt` carries a payload (and whose
    completeness marker the attacker rewrote to match) is refused, naming the file, and the payload never runs."""
    import torch

    first = _launch_zero2(tmp_path / "checkpoints", tmp_path / "first", total_steps=2)
    assert first.returncode == 0, first.stderr[-3000:]
    step = latest_checkpoint(tmp_path / "checkpoints")
    assert json.loads((tmp_path / "first" / "rank-0.json").read_text())["distributed_type"] == \
        "DistributedType.DEEPSPEED"
    deepspeed_files = sorted(step.rglob("*_states.pt"))
    assert {p.name.rsplit("_", 2)[-2] for p in deepspeed_files} == {"model", "optim"}
    written = {name for path in deepspeed_files for name in torch.serialization.get_unsafe_globals_in_checkpoint(path)}
    assert written == {".".join(entry) for entry in DEEPSPEED_STATE_CLASSES}, \
        "the allow-list is exactly the classes DeepSpeed writes: none missing, none allowed without need"
    for path in deepspeed_files:
        restricted_load(path)

    (optimizer_file,) = step.rglob("*optim_states.pt")
    state = torch.load(optimizer_file, weights_only=False)  # the test's own file: it may unpickle it in full
    marker = tmp_path / "payload-ran"
    state["planted"] = _Payload(marker)
    torch.save(state, optimizer_file)
    write_marker(step)  # the attacker rewrites the completeness marker too
    attacked = _launch_zero2(tmp_path / "checkpoints", tmp_path / "attacked", total_steps=4)
    assert attacked.returncode != 0
    assert f"{optimizer_file}: refused to load: it holds more than checkpoint state" in attacked.stderr
    assert not marker.exists(), "the planted payload ran"
