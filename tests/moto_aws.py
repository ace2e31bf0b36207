"""A moto server on 127.0.0.1 standing in for AWS (S3, SageMaker, CloudWatch Logs, KMS), with its env for boto3."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
import pytest
import requests
import s3fs
from moto.server import ThreadedMotoServer

from tests.servers import free_port, wait_until_serving

BUCKET = "rlhf-sagemaker"
SECRET = "moto-secret-key-never-logged"


@contextmanager
def _pointed_at(endpoint: str) -> Iterator[dict[str, str]]:
    """boto3 and s3fs in this process talk to `endpoint`, with a made-up key, and `BUCKET` exists there."""
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "AKIATESTKEY", "AWS_SECRET_ACCESS_KEY": SECRET,
           "AWS_DEFAULT_REGION": "us-east-1"}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        boto3.setup_default_session()
        s3fs.S3FileSystem.clear_instance_cache()  # s3fs keeps filesystems (and their endpoint) per process
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        yield env
        s3fs.S3FileSystem.clear_instance_cache()
    boto3.setup_default_session()


@pytest.fixture(scope="module")
def aws() -> Iterator[dict[str, str]]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    with _pointed_at(f"http://{host}:{port}") as env:
        yield env
    server.stop()


@contextmanager
def recording_aws(recording: Path) -> Iterator[dict[str, str]]:
    """A moto server of its own (a process) that records every request it gets into `recording`, one JSON line
    each (moto's recorder: method, URL, headers, body); `reset_recording(env)` starts the record afresh."""
    port = free_port()
    log = recording.with_name(f"{recording.name}.server.log")
    with log.open("w") as out:
        server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                  env={**os.environ, "MOTO_ENABLE_RECORDING": "1",
                                       "MOTO_RECORDER_FILEPATH": str(recording)},
                                  stdout=out, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(f"{endpoint}/moto-api/", server, log, timeout=60)
        with _pointed_at(endpoint) as env:
            yield env
    finally:
        server.terminate()
        server.wait(timeout=30)


def reset_recording(env: dict[str, str]) -> None:
    requests.post(f"{env['AWS_ENDPOINT_URL']}/moto-api/recorder/reset-recording", timeout=10).raise_for_status()
