"""The two AWS Lambda handlers a custom Ground Truth workflow needs (deploy this file; it needs only boto3).

`pre_annotation` turns a manifest line into the template's `task.input`; `consolidate` keeps every worker's
answer unmerged (preference statistics and inter-annotator agreement need each one). A malformed event or
payload fails with `LambdaEventError` naming the field, which Ground Truth records as the object's failure
reason, rather than a bare `KeyError` or `TypeError`.
"""

from __future__ import annotations

import json
import os
from typing import Any

TASK_FIELDS = ("task_id", "prompt", "response_a", "response_b")
PAYLOAD_BUCKETS_ENV = "RLHF_GT_PAYLOAD_BUCKETS"


class LambdaEventError(ValueError):
    """An event or payload our Ground Truth job could not have sent; the message names the field."""


def _field(container: Any, path: str, kind: type) -> Any:
    """`container[a][b]...` for a dotted `path`, of type `kind`, or a LambdaEventError naming the path."""
    value = container
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            raise LambdaEventError(f"event field {path!r} is missing")
        value = value[part]
    if not isinstance(value, kind):
        raise LambdaEventError(f"event field {path!r} must be {kind.__name__}, got {type(value).__name__}")
    return value


def pre_annotation(event: dict[str, Any], context: object = None) -> dict[str, Any]:
    """Ground Truth calls this per data object: the blinded task from `source` becomes `task.input`."""
    try:
        task = json.loads(_field(event, "dataObject.source", str))
    except (ValueError, RecursionError) as error:
        if isinstance(error, LambdaEventError):
            raise
        raise LambdaEventError(f"event field 'dataObject.source' is not JSON ({error})") from None
    if not isinstance(task, dict) or not all(isinstance(task.get(name), str) for name in TASK_FIELDS):
        raise LambdaEventError(f"event field 'dataObject.source' must be a task with string fields {TASK_FIELDS}")
    # Only the blinded fields reach the worker's page: anything else in `source` (a hand-edited manifest's
    # `rlhf_shown_as`, say) would be in the page's data for anyone who opens the developer tools.
    return {"taskInput": {name: task[name] for name in TASK_FIELDS}, "isHumanAnnotationRequired": "true"}


def payload_buckets() -> set[str]:
    """The buckets `consolidate` may read (`RLHF_GT_PAYLOAD_BUCKETS`, comma-separated: the job's output bucket)."""
    return {name.strip() for name in os.environ.get(PAYLOAD_BUCKETS_ENV, "").split(",") if name.strip()}


def consolidate(event: dict[str, Any], context: object = None, s3: Any = None,
                allowed_buckets: set[str] | None = None) -> list[dict[str, Any]]:
    """Ground Truth calls this with an S3 payload of all answers; we return them per object, unmerged.

    The payload is read only from the configured buckets (`allowed_buckets`, default `payload_buckets()`): the
    function's role may read more than the job's bucket, and an event naming another would make it a reader of
    that bucket for whoever can invoke it."""
    uri = _field(event, "payload.s3Uri", str)
    attribute = _field(event, "labelAttributeName", str)
    if not uri.startswith("s3://") or "/" not in uri.removeprefix("s3://"):
        raise LambdaEventError(f"event field 'payload.s3Uri' must be s3://bucket/key, got {uri!r}")
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    allowed = payload_buckets() if allowed_buckets is None else allowed_buckets
    if bucket not in allowed:
        raise LambdaEventError(f"event field 'payload.s3Uri' names bucket {bucket!r}, which is not a configured "
                               f"payload bucket ({PAYLOAD_BUCKETS_ENV}={','.join(sorted(allowed))!r})")
    if s3 is None:
        import boto3

        s3 = boto3.client("s3")
    try:
        objects = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except (ValueError, RecursionError) as error:
        raise LambdaEventError(f"payload {uri} is not JSON ({error})") from None
    if not isinstance(objects, list):
        raise LambdaEventError(f"payload {uri} must be a list of data objects, got {type(objects).__name__}")
    consolidated = []
    for index, item in enumerate(objects):
        where = f"payload {uri} [{index}]"
        if not isinstance(item, dict) or not isinstance(item.get("annotations"), list) \
                or "datasetObjectId" not in item:
            raise LambdaEventError(f"{where}: needs 'datasetObjectId' and a list of 'annotations'")
        answers = []
        for number, answer in enumerate(item["annotations"]):
            worker = answer.get("workerId") if isinstance(answer, dict) else None
            if not isinstance(worker, str) or not worker.strip() or not isinstance(answer.get("annotationData"), dict):
                raise LambdaEventError(f"{where}.annotations[{number}]: needs a non-empty 'workerId' string and an "
                                       "'annotationData' object")
            answers.append({"workerId": worker, "annotationData": answer["annotationData"]})
        consolidated.append({"datasetObjectId": item["datasetObjectId"],
                             "consolidatedAnnotation": {"content": {attribute: {
                                 "annotationsFromAllWorkers": answers}}}})
    return consolidated
