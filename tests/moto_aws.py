"""A moto server on 127.0.0.1 standing in for AWS (S3, SageMaker, CloudWatch Logs), with its env for boto3."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
import s3fs
from moto.server import ThreadedMotoServer

BUCKET = "rlhf-sagemaker"
SECRET = "moto-secret-key-never-logged"


@pytest.fixture(scope="module")
def aws() -> Iterator[dict[str, str]]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "AKIATESTKEY",
           "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": "us-east-1"}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        boto3.setup_default_session()
        s3fs.S3FileSystem.clear_instance_cache()  # s3fs keeps filesystems (and their endpoint) per process
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        yield env
        s3fs.S3FileSystem.clear_instance_cache()
    boto3.setup_default_session()
    server.stop()
