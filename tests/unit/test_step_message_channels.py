"""A SageMaker step's Pipes channels hand over every message, in order, in whole chunks, and their upload thread
stops as soon as the step closes its session instead of sleeping through dagster-pipes' one-second waits."""

import json
from pathlib import Path

import dagster_pipes
import pytest

from rlhf_assets.steps.runtime import RankedS3Channel, RankedS3MessageWriter, SyncedFileChannel

pytestmark = pytest.mark.unit


def _never_sleep(seconds: float) -> None:
    raise AssertionError(f"dagster-pipes' upload loop slept {seconds} s")


def _written(directory: Path) -> list[dict]:
    chunks = sorted(directory.glob("*.json"), key=lambda path: int(path.stem))
    return [json.loads(line) for chunk in chunks for line in chunk.read_text(encoding="utf-8").splitlines()]


def test_every_message_arrives_in_order_in_whole_chunks_and_the_close_wakes_the_uploader(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dagster_pipes.time, "sleep", _never_sleep)  # only our loop may run: it waits on the close
    channel = SyncedFileChannel(tmp_path / "rank-0", interval=0.0)
    with channel.buffered_upload_loop():
        for n in range(200):
            channel.write_message({"__dagster_pipes_version": "0.1", "method": "log", "params": {"n": n}})
    assert [message["params"]["n"] for message in _written(tmp_path / "rank-0")] == list(range(200))
    assert not list((tmp_path / "rank-0").glob(".*.partial")), "a chunk is renamed into place whole"


def test_a_rank_writes_under_its_own_attempt_prefix_with_the_prompt_close(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "3")
    channel = RankedS3MessageWriter(client=object(), interval=5.0).make_channel(
        {"bucket": "b", "key_prefix": "pipes/messages/job"})
    assert isinstance(channel, RankedS3Channel)
    assert channel._key_prefix.startswith("pipes/messages/job/rank-3/attempt-")
    assert (channel._bucket, channel._interval) == ("b", 5.0)
