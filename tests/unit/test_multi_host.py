"""Multi-host jobs: a checkpoint counts only when every host marked it whole; each node picks its own RM GPU."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from rlhf_assets.checkpoint_integrity import incomplete_reason, write_marker
from rlhf_assets.ppo.checkpoint import (
    commit_host_part,
    latest_checkpoint,
    staging_dir,
    staging_root,
    write_state,
)
from rlhf_assets.steps.reward import reward_gpu

pytestmark = pytest.mark.unit

HOSTS = ["algo-1", "algo-2"]


def _host_part(root: Path, host: str, step: int, payload: bytes) -> None:
    """What one host's ranks write for `step` (a big shard and an RNG state), committed by its local main."""
    staging = staging_dir(root, step, host)
    (staging / "pytorch_model").mkdir(parents=True)
    (staging / "pytorch_model" / f"shard_{host}.pt").write_bytes(payload * (1 << 20))  # not hashed: size only
    (staging / f"random_states_{host}.pkl").write_bytes(payload)
    if host == "algo-1":
        write_state(staging, step, {"kl": 0.05})
    commit_host_part(root, staging, step, host=host)


def test_a_checkpoint_is_complete_only_with_every_hosts_marker_and_whole_files(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SM_HOSTS", json.dumps(HOSTS))
    host_disks = {host: tmp_path / host for host in HOSTS}
    for step in (2, 4):
        for host, disk in host_disks.items():
            _host_part(disk, host, step, bytes([step]))
    # On its own disk each host sees only its part: nothing is complete before the S3 sync merges them.
    assert latest_checkpoint(host_disks["algo-2"]) is None
    assert incomplete_reason(host_disks["algo-2"] / "step-00000004") == "no completeness marker from algo-1"
    merged = tmp_path / "restored"  # what SageMaker restores on every host: the union of the hosts' uploads
    for disk in host_disks.values():
        shutil.copytree(disk, merged, dirs_exist_ok=True)
    assert latest_checkpoint(merged) == merged / "step-00000004"
    assert not list(merged.glob(".tmp-*")), "every host committed its staging"
    for disk in host_disks.values():
        assert not [p for p in staging_root(disk).rglob("*") if p.is_file()], "and left none behind"

    # A shard still uploading (short), a small file changed, a file never uploaded: each is seen and skipped.
    newest = merged / "step-00000004"
    shard = newest / "pytorch_model" / "shard_algo-2.pt"
    shard.write_bytes(shard.read_bytes()[:1000])
    logged: list[str] = []
    assert latest_checkpoint(merged, logged.append) == merged / "step-00000002"
    assert logged == [f"skipping checkpoint step-00000004: pytorch_model/shard_algo-2.pt has 1000 bytes, algo-2 "
                      f"wrote {1 << 20}"]
    (merged / "step-00000002" / "random_states_algo-1.pkl").write_bytes(b"\x09")
    assert incomplete_reason(merged / "step-00000002") == "random_states_algo-1.pkl differs from what algo-1 wrote"
    (merged / "step-00000002" / "random_states_algo-1.pkl").unlink()
    assert incomplete_reason(merged / "step-00000002") == "random_states_algo-1.pkl (listed by algo-1) is missing"
    assert latest_checkpoint(merged) is None


def test_a_marker_lists_every_file_with_sizes_and_small_file_hashes(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"\0" * (2 << 20))
    marker = json.loads(write_marker(tmp_path, "algo-1").read_text())["files"]
    assert marker["config.json"] == {"size": 2, "sha256": hashlib.sha256(b"{}").hexdigest()}
    assert marker["model.safetensors"] == {"size": 2 << 20}
    assert incomplete_reason(tmp_path, ["algo-1"]) is None


def test_the_reward_model_gpu_is_chosen_from_this_nodes_processes() -> None:
    """Two p4d hosts, 7 ranks each: WORLD_SIZE is 14, but each node still has a spare eighth GPU."""
    assert reward_gpu(device_count=8, local_world_size=7, local_rank=0) == 7
    assert reward_gpu(device_count=8, local_world_size=8, local_rank=0) == 0  # no spare GPU: share rank 0's


def test_a_commit_drops_checkpoints_left_after_the_step_it_resumed_from(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Resumed from step 4 because step 8 was only partly restored: committing step 6 removes the stale step 8
    (which would otherwise sort newest and push out step 4, the last good one) and prunes to two."""
    monkeypatch.setenv("SM_HOSTS", '["algo-1"]')
    for step in (2, 4):
        _host_part(tmp_path, "algo-1", step, b"\x01")
    (tmp_path / "step-00000008").mkdir()
    (tmp_path / "step-00000008" / "random_states_algo-1.pkl").write_bytes(b"partial")
    _host_part(tmp_path, "algo-1", 6, b"\x06")
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-00000004", "step-00000006"]
    assert latest_checkpoint(tmp_path) == tmp_path / "step-00000006"


class SimulatedSync:
    """SageMaker's checkpoint sync as far as bytes go: every file that appears (or changes) in the synced directory
    is uploaded, under its path; a rename is a new file. Scanned after each stage of a save."""

    def __init__(self, synced: Path) -> None:
        self.synced, self.seen, self.uploaded = synced, set(), 0

    def scan(self) -> None:
        for path in self.synced.rglob("*"):
            if path.is_file():
                stat = path.stat()
                key = (path.relative_to(self.synced).as_posix(), stat.st_size, stat.st_mtime_ns)
                if key not in self.seen:
                    self.seen.add(key)
                    self.uploaded += stat.st_size


def test_a_checkpoint_is_uploaded_once_because_staging_is_outside_the_synced_directory(tmp_path: Path) -> None:
    synced = tmp_path / "opt" / "ml" / "checkpoints"
    synced.mkdir(parents=True)
    sync = SimulatedSync(synced)
    staging = staging_dir(synced, 3)
    assert synced not in staging.parents and staging.parent.parent == synced.parent, "a sibling on the same disk"
    (staging / "pytorch_model").mkdir(parents=True)
    (staging / "pytorch_model" / "shard_0.pt").write_bytes(b"w" * (4 << 20))  # what save_state writes, rank by rank
    (staging / "optimizer.bin").write_bytes(b"o" * (2 << 20))
    write_state(staging, 3, {"kl": 0.05})
    sync.scan()  # the sync runs all the while the ranks write
    final = commit_host_part(synced, staging, 3)
    sync.scan()
    checkpoint_bytes = sum(p.stat().st_size for p in final.rglob("*") if p.is_file())
    assert sync.uploaded == checkpoint_bytes, "each byte of the checkpoint goes up once"
    assert not staging.exists() and latest_checkpoint(synced) == final
