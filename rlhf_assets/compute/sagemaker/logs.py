"""Forwarding a training job's CloudWatch log streams to the Dagster step's compute log, incrementally.

SageMaker writes each host's stdout/stderr to `/aws/sagemaker/TrainingJobs`, stream `<job>/algo-<n>-<epoch>`.
dagster-aws's `PipesCloudWatchLogReader` tails one stream named in advance, polls without pausing and cannot stop
while no new events arrive, so it does not fit a job whose streams appear as hosts start. This reader is the same
kind of `PipesLogReader`, composed into the Pipes message reader the same way: it discovers the job's streams by
prefix, keeps each stream's forward token (every poll reads only new events), pauses between polls, backs off on
throttling and stops after a final drain when the session closes. A failure here never ends the run: it is
reported once and the job itself is still watched by the client's poll loop.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, TextIO

from botocore.exceptions import BotoCoreError, ClientError
from dagster import PipesLogReader

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
THROTTLING_CODES = ("ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded")


class TrainingJobLogReader(PipesLogReader):
    """Tails every CloudWatch stream of one training job into `target` (stderr: Dagster's compute log)."""

    def __init__(self, client: Any, job_name: str, *, target: TextIO | None = None, interval: float = 5.0,
                 max_backoff: float = 60.0) -> None:
        self.client, self.job_name, self.target = client, job_name, target or sys.stderr
        self.interval, self.max_backoff = interval, max_backoff
        self.tokens: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def name(self) -> str:
        return f"CloudWatch logs of SageMaker training job {self.job_name}"

    def target_is_readable(self, params: Any) -> bool:
        return True  # streams are discovered while tailing; the log group may not exist yet

    def start(self, params: Any, is_session_closed: threading.Event) -> None:
        self._thread = threading.Thread(target=self._run, args=(is_session_closed,), daemon=True,
                                        name=f"cloudwatch-{self.job_name}")
        self._thread.start()

    def stop(self) -> None:
        """Ask for a final drain and wait for it (bounded), so the last lines land before the step ends."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self, is_session_closed: threading.Event) -> None:
        delay, final_tries = self.interval, 3
        while True:
            last_pass = self._stop.is_set() or is_session_closed.is_set()
            try:
                self.poll()
                delay = self.interval
            except ClientError as error:
                code = error.response.get("Error", {}).get("Code", "")
                if code in THROTTLING_CODES:
                    delay = min(delay * 2, self.max_backoff)
                    if last_pass and final_tries > 0:  # the final drain was throttled: wait and drain again
                        final_tries -= 1
                        time.sleep(delay)
                        continue
                elif code != "ResourceNotFoundException":  # the group appears when the first host starts
                    self._say(f"stopped forwarding CloudWatch logs of {self.job_name}: {code}: {error}")
                    return
            except BotoCoreError as error:
                self._say(f"stopped forwarding CloudWatch logs of {self.job_name}: {error}")
                return
            if last_pass:
                return
            self._stop.wait(delay)  # woken early by stop(); the next pass is then the final drain

    def poll(self) -> None:
        """Forward the events that arrived since the last poll, from every stream of the job."""
        request: dict[str, Any] = {"logGroupName": LOG_GROUP, "logStreamNamePrefix": f"{self.job_name}/"}
        streams: list[str] = []
        while True:
            page = self.client.describe_log_streams(**request)
            streams += [stream["logStreamName"] for stream in page.get("logStreams", [])]
            if not page.get("nextToken"):
                break
            request["nextToken"] = page["nextToken"]
        for stream in sorted(streams):
            self._drain(stream)

    def _drain(self, stream: str) -> None:
        while True:
            request: dict[str, Any] = {"logGroupName": LOG_GROUP, "logStreamName": stream, "startFromHead": True}
            if stream in self.tokens:
                request["nextToken"] = self.tokens[stream]
            page = self.client.get_log_events(**request)
            for event in page.get("events", []):
                self._say(f"[sagemaker {stream}] {event['message']}")
            token = page.get("nextForwardToken")
            if not token or token == self.tokens.get(stream):
                return  # the same token back means no more events for now
            self.tokens[stream] = token
            if not page.get("events"):
                return

    def _say(self, line: str) -> None:
        print(line, file=self.target, flush=True)
