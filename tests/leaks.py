"""Secret scanning for tests: which files, or which S3 objects, contain a secret's bytes."""

from __future__ import annotations

from pathlib import Path

import boto3
from botocore.config import Config


def files_containing(secret: str, *roots: Path) -> list[Path]:
    """Every file under `roots` whose bytes include `secret` (databases and logs included)."""
    needle = secret.encode()
    return [path for root in roots if root.exists() for path in sorted(root.rglob("*"))
            if path.is_file() and needle in path.read_bytes()]


def s3_objects_containing(secret: str, bucket: str) -> list[str]:
    """Every object key in `bucket` whose body includes `secret`. (moto answers a multipart object's GET with a
    whole-object checksum that botocore cannot match, so only checksums S3 requires are validated here.)"""
    s3 = boto3.client("s3", config=Config(response_checksum_validation="when_required"))
    needle = secret.encode()
    keys = [item["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for item in page.get("Contents", [])]
    return [key for key in keys if needle in s3.get_object(Bucket=bucket, Key=key)["Body"].read()]
