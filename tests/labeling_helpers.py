"""Test helpers for the labeling app: tasks from a small responses table, and the real app in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import boto3
import numpy as np
import pandas as pd
import requests

from rlhf_assets.labeling.groundtruth import GroundTruthJobSpec, input_manifest, job_request
from rlhf_assets.labeling.groundtruth_lambdas import consolidate
from rlhf_assets.labeling.store import LabelStore
from rlhf_assets.labeling.tasks import PairwiseTask, batch_id, build_tasks, read_guidelines
from tests.moto_aws import BUCKET
from tests.servers import free_port, wait_until_serving

ATTRIBUTE = "rlhf-preference"

XSS_RESPONSE = ('<script>window.__pwned = "script";</script><img src=x onerror="window.__pwned = \'img\'">'
                "& a <b>bold</b> claim")


def responses_table(count: int, *, hostile_first: bool = False) -> pd.DataFrame:
    """Eval-responses rows like `eval_responses` writes; the first RLHF response can carry markup payloads."""
    rows = [{"prompt_id": i, "prompt": f"\n\nHuman: question {i}?\n\nAssistant:",
             "sft_response": f"sft answer {i}", "rlhf_response": f"rlhf answer {i}"} for i in range(count)]
    if hostile_first:
        rows[0]["rlhf_response"] = XSS_RESPONSE
        rows[0]["prompt"] = "\n\nHuman: <script>window.__pwned = 'prompt';</script> hi\n\nAssistant:"
    return pd.DataFrame(rows)


def fixed_order(count: int, seed: int = 0) -> list[bool]:
    """A reproducible shown order for tests (the product draws it from `secrets`)."""
    return [bool(x) for x in np.random.default_rng(seed).random(count) < 0.5]


def queue_tasks(store: LabelStore, count: int, overlap: int = 1, **kwargs: bool) -> list[PairwiseTask]:
    """Build tasks like `human_eval_tasks` does and register them as the active batch."""
    guidelines = read_guidelines(None)
    tasks = build_tasks(responses_table(count, **kwargs), rlhf_first=fixed_order(count), guidelines=guidelines)
    store.register_batch(tasks, batch_id(tasks), overlap, source="test", guidelines=guidelines)
    return tasks


@contextmanager
def labeling_server(db: Path, tls: tuple[Path, Path] | None = None, options: Sequence[str] = ()) -> Iterator[str]:
    """`rlhf-assets label` as users start it, on a free 127.0.0.1 port (HTTPS with `tls`; more command-line
    `options`); yields its base URL."""
    port = free_port()
    log_path = db.parent / f"server-{port}.log"
    log = log_path.open("w")
    # Tests about other things label at once; the pacing test passes its own --min-seconds-per-pair.
    pacing = [] if "--min-seconds-per-pair" in options else ["--min-seconds-per-pair", "0"]
    extra = [*(["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])] if tls else []), *pacing, *options]
    process = subprocess.Popen(
        [sys.executable, "-m", "rlhf_assets.cli", "--db", str(db), "label", "--port", str(port), *extra],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    try:
        wait_until_serving(f"{url}/healthz", process, log_path, timeout=30, verify=str(tls[0]) if tls else True)
        yield url
    finally:
        process.terminate()
        try:  # the tests need no graceful shutdown: 2 s, then SIGKILL
            process.wait(timeout=2)
        except subprocess.TimeoutExpired:  # uvicorn waits for open keep-alive (TLS) connections to close
            process.kill()
            process.wait(timeout=10)
        log.close()


def crowd_answer(choice: str, comment: str = "") -> dict[str, object]:
    """What the Ground Truth crowd-form submits for our template."""
    return {"prefer_a": {"A": choice == "A"}, "tie": {"tie": choice == "tie"}, "prefer_b": {"B": choice == "B"},
            "comment": comment}


def ground_truth_output(tasks: list[PairwiseTask], answers: list[dict[str, tuple[str, ...]]]) -> str:
    """An output manifest as Ground Truth writes it, built through our consolidation Lambda on moto S3.

    `answers[i]` maps worker id to (choice,) or (choice, comment) for task i.
    """
    s3 = boto3.client("s3")
    manifest_lines = input_manifest(tasks).splitlines()
    payload = [{"datasetObjectId": str(i), "dataObject": json.loads(line),
                "annotations": [{"workerId": worker, "annotationData": {"content": json.dumps(crowd_answer(*answer))}}
                                for worker, answer in answers[i].items()]}
               for i, line in enumerate(manifest_lines)]
    s3.put_object(Bucket=BUCKET, Key="gt-payload/consolidation-request.json", Body=json.dumps(payload).encode())
    consolidated = consolidate({"payload": {"s3Uri": f"s3://{BUCKET}/gt-payload/consolidation-request.json"},
                                "labelAttributeName": ATTRIBUTE}, s3=s3, allowed_buckets={BUCKET})
    lines = []
    for line, item in zip(manifest_lines, consolidated, strict=True):
        record = json.loads(line)
        record.update(item["consolidatedAnnotation"]["content"])
        record[f"{ATTRIBUTE}-metadata"] = {"type": "groundtruth/custom", "job-name": "rlhf-eval",
                                           "human-annotated": "yes", "creation-date": "2026-11-26T12:00:00.000000"}
        lines.append(json.dumps(record))
    return "\n".join(lines) + "\n"


def described_job(spec: GroundTruthJobSpec, status: str, output_uri: str | None = None) -> dict[str, object]:
    """`describe_labeling_job`'s answer for a job created from `spec` (the request's own fields)."""
    request = job_request(spec, f"{spec.s3_prefix}/input.manifest", f"{spec.s3_prefix}/template.liquid.html")
    now = datetime.now(UTC)
    return {**{k: v for k, v in request.items() if k != "Tags"}, "LabelingJobStatus": status,
            "JobReferenceCode": "ref", "LabelCounters": {}, "CreationTime": now, "LastModifiedTime": now,
            "LabelingJobArn": f"arn:aws:sagemaker:us-east-1:123456789012:labeling-job/{spec.job_name}",
            **({"LabelingJobOutput": {"OutputDatasetS3Uri": output_uri}} if output_uri else {})}


def acknowledge_guidelines(url: str, headers: dict[str, str]) -> None:
    """What a script does before labelling: read the active batch's guidelines, then say so for that batch."""
    shown = requests.get(url + "/api/guidelines", headers=headers, timeout=10).json()
    assert shown["guidelines"].startswith("Content warning")
    answer = requests.post(url + "/api/guidelines", headers=headers, json={"batch": shown["batch"]}, timeout=10)
    assert answer.status_code == 204, answer.text
