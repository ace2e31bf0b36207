"""The two AWS Lambda handlers a custom Ground Truth workflow needs (deploy this file; it needs only boto3).

`pre_annotation` turns a manifest line into the template's `task.input`; `consolidate` keeps every worker's
answer unmerged (preference statistics and inter-annotator agreement need each one).
"""

from __future__ import annotations

import json
from typing import Any


def pre_annotation(event: dict[str, Any], context: object = None) -> dict[str, Any]:
    """Ground Truth calls this per data object: the blinded task from `source` becomes `task.input`."""
    task = json.loads(event["dataObject"]["source"])
    return {"taskInput": task, "isHumanAnnotationRequired": "true"}


def consolidate(event: dict[str, Any], context: object = None, s3: Any = None) -> list[dict[str, Any]]:
    """Ground Truth calls this with an S3 payload of all answers; we return them per object, unmerged."""
    if s3 is None:
        import boto3

        s3 = boto3.client("s3")
    bucket, _, key = event["payload"]["s3Uri"].removeprefix("s3://").partition("/")
    objects = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    attribute = event["labelAttributeName"]
    return [
        {"datasetObjectId": item["datasetObjectId"],
         "consolidatedAnnotation": {"content": {attribute: {"annotationsFromAllWorkers": [
             {"workerId": answer["workerId"], "annotationData": answer["annotationData"]}
             for answer in item["annotations"]]}}}}
        for item in objects
    ]
