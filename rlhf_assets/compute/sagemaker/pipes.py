"""Pipes messages of a multi-process job through S3: one chunk stream per rank, merged by one reader.

dagster-pipes' S3 writer numbers its chunks `<key_prefix>/1.json, 2.json, …` per process. In a job with several
ranks (7 training processes × N hosts) every rank would write the same keys and overwrite the others' chunks, and
the stock reader would stop at the first `closed` it sees. Here each rank writes under
`<key_prefix>/rank-<r>/<attempt>/` (`rlhf_assets.steps.runtime.RankedS3MessageWriter`; one attempt per container
start), and `RankedS3MessageReader` drains every rank's backlog on each poll and counts the session closed only
when all ranks have closed. Message keys live under the backend's
`pipes/messages/<job name>/` prefix, so a prefix-scoped IAM policy covers them, and a run that adopts a job whose
worker died reads that job's messages, from the first.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from botocore.exceptions import ClientError
from dagster import PipesContextInjector, PipesLogReader
from dagster_aws.pipes import PipesS3MessageReader
from dagster_pipes import PipesContextData, PipesParams

from rlhf_assets.contract import PIPES_CONTEXT_CHANNEL, PIPES_CONTEXT_FILE, PIPES_RANK_PREFIX


class RankedS3MessageReader(PipesS3MessageReader):
    """Reads the Pipes messages of `world_size` ranks, each written under its own prefix, as one stream.

    A managed-spot job restarts its container after an interruption with the same environment, so a rank can
    write several times; each container start writes under its own attempt segment (chunk numbers restart at 1
    there), every attempt is read, and each rank's `closed` counts once, never from a superseded attempt.
    """

    def __init__(self, *, bucket: str, client: Any, key_prefix: str, world_size: int, interval: float = 10.0,
                 log_readers: Sequence[PipesLogReader] | None = None, synced_dir: str | None = None) -> None:
        """`synced_dir`: the writers write files under that folder of the job's checkpoint directory, which
        SageMaker uploads to `key_prefix` (a network-isolated job); otherwise they write to `key_prefix` on S3."""
        super().__init__(interval=interval, bucket=bucket, client=client, log_readers=log_readers)
        self.key_prefix, self.world_size, self.synced_dir = key_prefix.strip("/"), world_size, synced_dir
        self.next_chunk: dict[str, int] = {}
        self.closed_ranks: set[int] = set()

    @property
    def expected_writer_count(self) -> int:
        """Every rank sends its own `opened` and `closed`; the session ends when all of them have closed."""
        return self.world_size

    @contextmanager
    def get_params(self) -> Iterator[dict[str, Any]]:
        self.next_chunk, self.closed_ranks = {}, set()
        yield {"bucket": self.bucket, "key_prefix": self.key_prefix, "include_stdio_in_messages": False,
               **({"synced_dir": self.synced_dir} if self.synced_dir else {})}

    def messages_are_readable(self, params: dict[str, Any]) -> bool:
        return bool(self._attempts(params["key_prefix"], 0))

    def download_messages(self, cursor: int | None, params: dict[str, Any]) -> tuple[int, str] | None:
        """Every chunk that has arrived since the last poll, from every rank and attempt (a backlog is drained at
        once, so nothing is left unread when the job ends)."""
        lines: list[str] = []
        for rank in range(self.world_size):
            attempts = self._attempts(params["key_prefix"], rank)
            for attempt in attempts:
                superseded = attempt != attempts[-1]
                while (chunk := self._get(f"{attempt}{self.next_chunk.get(attempt, 1)}.json")) is not None:
                    self.next_chunk[attempt] = self.next_chunk.get(attempt, 1) + 1
                    for line in chunk.split("\n"):
                        if _is_closed(line):
                            if superseded or rank in self.closed_ranks:
                                continue
                            self.closed_ranks.add(rank)
                        lines.append(line)
        if not lines:
            return None
        return (cursor or 0) + 1, "\n".join(lines)

    def _attempts(self, key_prefix: str, rank: int) -> list[str]:
        """The attempt segments rank `rank` has written, oldest first (their names start with the start time)."""
        listing = self.client.list_objects_v2(Bucket=self.bucket, Prefix=f"{key_prefix}/{PIPES_RANK_PREFIX}{rank}/",
                                              Delimiter="/")
        return sorted(common["Prefix"] for common in listing.get("CommonPrefixes", []))

    def _get(self, key: str) -> str | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read().decode("utf-8")
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise

    def no_messages_debug_text(self) -> str:
        return (f"Attempted to read messages of {self.world_size} rank(s) from s3://{self.bucket}/{self.key_prefix}/; "
                "each rank writes with rlhf_assets.steps.runtime.RankedS3MessageWriter")


def _is_closed(line: str) -> bool:
    try:
        return json.loads(line).get("method") == "closed"
    except (ValueError, AttributeError):
        return False


class ChannelContextInjector(PipesContextInjector):
    """The Pipes context as `context.json` under an S3 prefix that the job mounts as an input channel: SageMaker
    downloads it with the execution role, so a network-isolated container, which may call nothing, still gets it."""

    def __init__(self, *, bucket: str, client: Any, key_prefix: str) -> None:
        self.bucket, self.client, self.key_prefix = bucket, client, key_prefix.strip("/")

    @contextmanager
    def inject_context(self, context_data: PipesContextData) -> Iterator[PipesParams]:
        key = f"{self.key_prefix}/{PIPES_CONTEXT_FILE}"
        self.client.put_object(Bucket=self.bucket, Key=key, Body=json.dumps(context_data).encode())
        try:
            yield {"channel": PIPES_CONTEXT_CHANNEL}
        finally:
            self.client.delete_object(Bucket=self.bucket, Key=key)

    def no_messages_debug_text(self) -> str:
        return (f"The context was written to s3://{self.bucket}/{self.key_prefix}/{PIPES_CONTEXT_FILE}, the job's "
                f"{PIPES_CONTEXT_CHANNEL} channel")
