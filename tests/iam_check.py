"""Every AWS call a run made, recorded by the moto server, checked against the IAM policy files as AWS would.

moto's own IAM enforcement covers S3 only (SageMaker and CloudWatch Logs statements are evaluated against `*`,
`iam:PassRole`, KMS and conditions not at all), so it is off here: the server records each request
(`MOTO_ENABLE_RECORDING`), and this module turns each into the permissions AWS checks for it, for the principal
that signed it, including those AWS checks on a caller's behalf: `iam:PassRole` for the job's role, `sagemaker:AddTags`
for tags given at creation, and the KMS actions S3 performs for a caller on a bucket encrypted with a KMS key
(`kms:GenerateDataKey` to write, `kms:Decrypt` to read or to upload a part). Each permission must be allowed by an
`Allow` statement of that principal's policy: its action, its resource ARN and its conditions (StringEquals,
StringLike, Bool), exactly as written; nothing is widened.
"""

from __future__ import annotations

import base64
import fnmatch
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse
from xml.etree import ElementTree

ACCOUNT, REGION = "123456789012", "us-east-1"
S3_VIA = {"kms:ViaService": f"s3.{REGION}.amazonaws.com"}


@dataclass(frozen=True)
class Permission:
    action: str
    resource: str
    context: tuple[tuple[str, str], ...] = ()
    why: str = ""


@dataclass
class Call:
    principal: str  # the access key id that signed it
    service: str
    operation: str
    params: dict[str, Any] = field(default_factory=dict)
    bucket: str = ""
    key: str = ""
    headers: dict[str, str] = field(default_factory=dict)


def read_recording(path: Path) -> list[Call]:
    """The recorded requests, as calls (service, operation, parameters, who signed them)."""
    calls = []
    for entry in _entries(path.read_text()):
        headers = {k.lower(): v for k, v in entry["headers"].items()}
        signed = re.search(r"Credential=([^/]+)/\d+/[^/]+/([^/]+)/", headers.get("authorization", ""))
        if signed is None:
            continue  # unsigned: moto's own API (reset, recorder) or a call that was never authorized
        principal, service = signed.groups()
        body = base64.b64decode(entry["body"]) if entry.get("body_encoded") else (entry.get("body") or "").encode()
        if service == "s3":
            calls.append(_s3_call(principal, entry["method"], entry["url"], headers, body))
        else:
            target = headers.get("x-amz-target", "")
            calls.append(Call(principal, service, target.rsplit(".", 1)[-1], json.loads(body or b"{}"),
                              headers=headers))
    return calls


def _entries(text: str) -> Iterator[dict[str, Any]]:
    """The recorder's entries: one JSON object per line, except that the server's threads write an object and
    its newline separately, so two objects can share a line."""
    decoder, position = json.JSONDecoder(), 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position == len(text):
            return
        entry, position = decoder.raw_decode(text, position)
        yield entry


def _s3_call(principal: str, method: str, url: str, headers: dict[str, str], body: bytes) -> Call:
    parsed = urlparse(url)
    bucket, _, key = unquote(parsed.path).lstrip("/").partition("/")
    query = parse_qs(parsed.query, keep_blank_values=True)
    copy = "x-amz-copy-source" in headers
    if not key:
        operation = {"GET": "ListObjectsV2" if "list-type" in query else "ListObjects", "HEAD": "HeadBucket",
                     "PUT": "CreateBucket", "POST": "DeleteObjects" if "delete" in query else "PostBucket"}[method]
        if method == "GET" and "uploads" in query:
            operation = "ListMultipartUploads"
        if method == "PUT" and "encryption" in query:
            operation = "PutBucketEncryption"
    elif method == "PUT":
        operation = ("UploadPartCopy" if copy else "UploadPart") if "partNumber" in query else (
            "CopyObject" if copy else "PutObject")
    elif method == "POST":
        operation = "CreateMultipartUpload" if "uploads" in query else "CompleteMultipartUpload"
    elif method == "DELETE":
        operation = "AbortMultipartUpload" if "uploadId" in query else "DeleteObject"
    elif method == "GET":
        operation = "ListParts" if "uploadId" in query else "GetObject"
    else:
        operation = "HeadObject"
    params: dict[str, Any] = {}
    if operation == "DeleteObjects":
        params["Keys"] = [element.text for element in ElementTree.fromstring(body).iter()
                          if element.tag.endswith("Key")]
    if copy:
        source = unquote(headers["x-amz-copy-source"]).lstrip("/").split("?")[0]
        params["SourceBucket"], _, params["SourceKey"] = source.partition("/")
    return Call(principal, "s3", operation, params, bucket, key, headers)


def required(call: Call, object_key: Callable[[str, str], str | None]) -> list[Permission]:
    """What AWS checks for `call`: its own action, and what it does on the caller's behalf. `object_key(bucket,
    key)` is the KMS key an existing object is encrypted with (a bucket's default, or the one it was written
    with)."""
    if call.service == "s3":
        return _s3_permissions(call, object_key)
    if call.service == "sagemaker":
        name = call.params.get("TrainingJobName") or call.params.get("ResourceArn", "").rsplit("/", 1)[-1]
        job = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/{name}"
        if call.operation == "ListTrainingJobs":
            return [Permission("sagemaker:ListTrainingJobs", "*")]  # a list action takes no resource
        needed = [Permission(f"sagemaker:{call.operation}", job)]
        if call.operation == "CreateTrainingJob":
            needed.append(Permission("iam:PassRole", call.params["RoleArn"],
                                     (("iam:PassedToService", "sagemaker.amazonaws.com"),), "the job's role"))
            if call.params.get("Tags"):
                needed.append(Permission("sagemaker:AddTags", job, why="tags given at creation"))
        return needed
    if call.service == "logs":
        group = call.params.get("logGroupName", "")
        stream = call.params.get("logStreamName")
        resource = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{group}:" + (
            f"log-stream:{stream}" if stream and call.operation != "DescribeLogStreams" else "*")
        return [Permission(f"logs:{call.operation}", resource)]
    return [Permission(f"{call.service}:{call.operation}", "*")]


def _s3_permissions(call: Call, object_key: Callable[[str, str], str | None]) -> list[Permission]:
    bucket = f"arn:aws:s3:::{call.bucket}"
    obj = f"{bucket}/{call.key}"
    via = tuple(S3_VIA.items())
    key = call.headers.get("x-amz-server-side-encryption-aws-kms-key-id") or object_key(call.bucket, call.key)
    action = {"ListObjectsV2": ("s3:ListBucket", bucket), "ListObjects": ("s3:ListBucket", bucket),
              "HeadBucket": ("s3:ListBucket", bucket), "HeadObject": ("s3:GetObject", obj),
              "GetObject": ("s3:GetObject", obj), "PutObject": ("s3:PutObject", obj),
              "CopyObject": ("s3:PutObject", obj), "CreateMultipartUpload": ("s3:PutObject", obj),
              "UploadPart": ("s3:PutObject", obj), "UploadPartCopy": ("s3:PutObject", obj),
              "CompleteMultipartUpload": ("s3:PutObject", obj), "DeleteObject": ("s3:DeleteObject", obj),
              "AbortMultipartUpload": ("s3:AbortMultipartUpload", obj),
              "ListParts": ("s3:ListMultipartUploadParts", obj),
              "ListMultipartUploads": ("s3:ListBucketMultipartUploads", bucket)}
    if call.operation == "DeleteObjects":
        return [Permission("s3:DeleteObject", f"{bucket}/{key_}") for key_ in call.params["Keys"]]
    needed = [Permission(*action[call.operation])]
    if key and call.operation in ("PutObject", "CopyObject", "CreateMultipartUpload"):
        needed.append(Permission("kms:GenerateDataKey", key, via, "S3 encrypts the new object with the key"))
    if key and call.operation in ("GetObject", "UploadPart", "UploadPartCopy", "CompleteMultipartUpload"):
        needed.append(Permission("kms:Decrypt", key, via, "S3 decrypts the object or the upload's data key"))
    if "SourceBucket" in call.params:
        needed.append(Permission("s3:GetObject", f"arn:aws:s3:::{call.params['SourceBucket']}/"
                                                 f"{call.params['SourceKey']}", why="the copy's source"))
        source_key = object_key(call.params["SourceBucket"], call.params["SourceKey"])
        if source_key:
            needed.append(Permission("kms:Decrypt", source_key, via, "S3 reads the copy's source"))
    return needed


def for_the_job_role(create: dict[str, Any]) -> list[Permission]:
    """What SageMaker does as the job's role because of how the job was created (AWS's documentation of
    `OutputDataConfig.KmsKeyId` and `ResourceConfig.VolumeKmsKeyId`)."""
    needed = []
    if create["OutputDataConfig"].get("KmsKeyId"):
        needed.append(Permission("kms:Encrypt", create["OutputDataConfig"]["KmsKeyId"], why="the output's key"))
    if create["ResourceConfig"].get("VolumeKmsKeyId"):
        needed.append(Permission("kms:CreateGrant", create["ResourceConfig"]["VolumeKmsKeyId"],
                                 (("kms:GrantIsForAWSResource", "true"),), "the volume's key"))
    return needed


def _matches(pattern: str, value: str) -> bool:
    return fnmatch.fnmatchcase(value, pattern)


def _condition_holds(condition: dict[str, dict[str, Any]], context: dict[str, str]) -> bool:
    for operator, tests in condition.items():
        for key, expected in tests.items():
            values = expected if isinstance(expected, list) else [expected]
            actual = context.get(key)
            if actual is None:
                return False
            if operator == "StringEquals" and actual not in values:
                return False
            if operator == "StringLike" and not any(_matches(v, actual) for v in values):
                return False
            if operator == "Bool" and actual.lower() not in [str(v).lower() for v in values]:
                return False
            if operator not in ("StringEquals", "StringLike", "Bool"):
                raise ValueError(f"condition operator {operator} is not evaluated here: add it or avoid it")
    return True


def allowed(policy: dict[str, Any], permission: Permission) -> bool:
    """Whether an Allow statement of `policy` grants `permission` (no Deny statements are used)."""
    for statement in policy["Statement"]:
        if statement["Effect"] != "Allow":
            raise ValueError("only Allow statements are evaluated here")
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        if not any(_matches(a.lower(), permission.action.lower()) for a in actions):
            continue
        if not any(_matches(r, permission.resource) for r in resources):
            continue
        if _condition_holds(statement.get("Condition", {}), dict(permission.context)):
            return True
    return False
