"""SageMaker Ground Truth I/O: manifest, worker template, job request, the Lambdas and the output parser.

moto serves S3 (manifest, template, Lambda payloads); it has no Ground Truth API, so botocore's `Stubber`
(which validates every request against the real SageMaker service model) answers `create_labeling_job`.
"""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.stub import Stubber
from liquid import Environment

from rlhf_assets.labeling.groundtruth import (
    GroundTruthJobSpec,
    OutputManifestError,
    input_manifest,
    job_request,
    parse_output_manifest,
    start_labeling_job,
    worker_template,
)
from rlhf_assets.labeling.groundtruth_lambdas import LambdaEventError, consolidate, pre_annotation
from rlhf_assets.labeling.tasks import Choice, build_tasks, read_guidelines
from tests.labeling_helpers import (
    ATTRIBUTE,
    crowd_answer,
    described_job,
    fixed_order,
    ground_truth_output,
    responses_table,
)
from tests.moto_aws import BUCKET

pytestmark = pytest.mark.aws

GUIDELINES = read_guidelines(None)
SPEC = GroundTruthJobSpec(
    job_name="rlhf-eval-test", s3_prefix=f"s3://{BUCKET}/human-eval/", workers_per_task=2,
    role_arn="arn:aws:iam::123456789012:role/gt",
    workteam_arn="arn:aws:sagemaker:us-east-1:123456789012:workteam/private-crowd/rlhf",
    pre_annotation_lambda_arn="arn:aws:lambda:us-east-1:123456789012:function:rlhf-gt-pre",
    consolidation_lambda_arn="arn:aws:lambda:us-east-1:123456789012:function:rlhf-gt-consolidate",
)


def test_worker_template_escapes_hostile_text() -> None:
    task = build_tasks(responses_table(1, hostile_first=True), rlhf_first=fixed_order(1, 0))[0]
    for autoescape in (True, False):  # Ground Truth autoescapes; the template's explicit `escape` holds without it
        page = Environment(autoescape=autoescape).from_string(worker_template(GUIDELINES)).render(
            task={"input": pre_annotation({"dataObject": json.loads(input_manifest([task]))})["taskInput"]})
        assert "<script>window" not in page and "<img src=x" not in page and "<b>bold" not in page
        assert "&lt;script&gt;window.__pwned" in page and "&amp;lt;" not in page
    for name in ("prefer_a", "prefer_b", "tie", "comment"):
        assert f'name="{name}"' in worker_template(GUIDELINES)


def test_the_worker_template_shows_the_batch_guidelines_escaped() -> None:
    """Issue 16 (8): workers read the content warning and the guidelines; markup or Liquid in them stays text."""
    page = worker_template(GUIDELINES)
    assert "Content warning: some conversations come from red-teaming" in page
    assert "Worked examples:" in page and "<!-- GUIDELINES -->" not in page
    hostile = worker_template("Warning <script>x()</script>\n\n{{ task.input.prompt }} and {% raw %}")
    assert "<script>x()" not in hostile and "&lt;script&gt;" in hostile
    assert "{{" not in hostile.split("full-instructions")[1] and "{%" not in hostile.split("full-instructions")[1]
    assert "<p>Warning &lt;script&gt;x()&lt;/script&gt;</p>" in hostile


def test_input_manifest_is_blinded_json_lines() -> None:
    tasks = build_tasks(responses_table(3), rlhf_first=fixed_order(3, 0))
    lines = input_manifest(tasks).splitlines()
    assert len(lines) == 3
    for line, task in zip(lines, tasks, strict=True):
        assert json.loads(json.loads(line)["source"]) == task.blinded()
        assert "rlhf_shown_as" not in line and "sft" not in line.replace("sft answer", "")


def test_start_labeling_job_uploads_to_s3_and_sends_a_valid_request(aws) -> None:
    tasks = build_tasks(responses_table(4), rlhf_first=fixed_order(4, 0))
    sagemaker = boto3.client("sagemaker")
    arn = "arn:aws:sagemaker:us-east-1:123456789012:labeling-job/rlhf-eval-test"
    expected = job_request(SPEC, f"s3://{BUCKET}/human-eval/input.manifest",
                           f"s3://{BUCKET}/human-eval/template.liquid.html")
    with Stubber(sagemaker) as stub:
        stub.add_client_error("describe_labeling_job", service_error_code="ResourceNotFound",
                              http_status_code=400, expected_params={"LabelingJobName": SPEC.job_name})
        stub.add_response("create_labeling_job", {"LabelingJobArn": arn}, expected)
        assert start_labeling_job(sagemaker, boto3.client("s3"), SPEC, tasks, GUIDELINES) == arn
        stub.assert_no_pending_responses()
    with Stubber(sagemaker) as stub:  # the same batch again: the existing job is returned, nothing is created
        existing = described_job(SPEC, "InProgress")
        stub.add_response("describe_labeling_job", existing, {"LabelingJobName": SPEC.job_name})
        assert start_labeling_job(sagemaker, boto3.client("s3"), SPEC, tasks, GUIDELINES) == existing["LabelingJobArn"]
        stub.assert_no_pending_responses()
    assert expected["HumanTaskConfig"]["NumberOfHumanWorkersPerDataObject"] == 2
    s3 = boto3.client("s3")
    manifest = s3.get_object(Bucket=BUCKET, Key="human-eval/input.manifest")["Body"].read().decode()
    assert manifest == input_manifest(tasks)
    assert s3.get_object(Bucket=BUCKET, Key="human-eval/template.liquid.html")["Body"].read().decode() \
        == worker_template(GUIDELINES)


def test_lambdas_and_output_parser_round_trip(aws) -> None:
    tasks = build_tasks(responses_table(3), rlhf_first=fixed_order(3, 0))
    answers = [{"w1": ("A", "A is kinder"), "w2": ("tie",)}, {"w1": ("B",), "w2": ("B",)}, {"w1": ("tie",)}]
    text = ground_truth_output(tasks, answers)
    labels = parse_output_manifest(text.splitlines(), label_attribute=ATTRIBUTE,
                                   tasks={t.task_id: t for t in tasks}, source="s3://b/output.manifest")
    got = {(label.task_id, label.worker_id): (label.choice, label.comment) for label in labels}
    assert got == {(tasks[0].task_id, "w1"): (Choice.a, "A is kinder"), (tasks[0].task_id, "w2"): (Choice.tie, ""),
                   (tasks[1].task_id, "w1"): (Choice.b, ""), (tasks[1].task_id, "w2"): (Choice.b, ""),
                   (tasks[2].task_id, "w1"): (Choice.tie, "")}
    assert tasks[0].outcome(Choice.a) == ("win" if tasks[0].rlhf_shown_as == "A" else "loss")


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda r: "{not json", r"out.manifest:2: field 'source' does not hold a task"),
    (lambda r: json.dumps({**r, "source": "plain text"}), r"out.manifest:2: field 'source' does not hold a task"),
    (lambda r: json.dumps({**r, "source": json.dumps({"task_id": "other-7"})}), r":2: unknown task 'other-7'"),
    (lambda r: json.dumps({k: v for k, v in r.items() if k != ATTRIBUTE}),
     r":2: field 'rlhf-preference' lacks 'annotationsFromAllWorkers'"),
    (lambda r: json.dumps({**r, ATTRIBUTE: {"annotationsFromAllWorkers": [
        {"workerId": "w9", "annotationData": {"content": json.dumps({**crowd_answer("A"), "tie": {"tie": True}})}}]}}),
     r":2: field rlhf-preference.annotationsFromAllWorkers\[0\]: expected exactly one .* got 2"),
    (lambda r: json.dumps({**r, ATTRIBUTE: {"annotationsFromAllWorkers": [{"workerId": "w9"}]}}),
     r":2: field rlhf-preference.annotationsFromAllWorkers\[0\]: 'annotationData'"),
    (lambda r: json.dumps({**r, "source": json.dumps({"task_id": ["a", "b"]})}),
     r":2: field 'source.task_id' must be a string, got list"),
    (lambda r: json.dumps({**r, ATTRIBUTE: {"annotationsFromAllWorkers": [
        {"workerId": None, "annotationData": {"content": json.dumps(crowd_answer("A"))}}]}}),
     r":2: field rlhf-preference.annotationsFromAllWorkers\[0\]: workerId must be a non-empty string, got None"),
    (lambda r: json.dumps({**r, ATTRIBUTE: {"annotationsFromAllWorkers": [
        {"workerId": "w9", "annotationData": {"content": ["A"]}}]}}),
     r":2: field rlhf-preference.annotationsFromAllWorkers\[0\]: annotationData.content must be a JSON string, "
     r"got list"),
    (lambda r: json.dumps({**r, ATTRIBUTE: {"annotationsFromAllWorkers": [
        {"workerId": "w9", "annotationData": {"content": '"A"'}}]}}),
     r":2: field rlhf-preference.annotationsFromAllWorkers\[0\]: annotationData.content must hold a JSON object, "
     r"got str"),
    (lambda r: "[" * 100_000 + "]" * 100_000, r":2: nested too deeply to be a Ground Truth output line"),
    (lambda r: json.dumps({**r, ATTRIBUTE: {"annotationsFromAllWorkers": [
        {"workerId": "w9", "annotationData": {"content": "[" * 100_000 + "]" * 100_000}}]}}),
     r":2: field rlhf-preference.annotationsFromAllWorkers\[0\].annotationData.content is nested too deeply"),
])
def test_malformed_output_lines_name_the_file_line_and_field(aws, mutate, message: str) -> None:
    tasks = build_tasks(responses_table(2), rlhf_first=fixed_order(2, 0))
    lines = ground_truth_output(tasks, [{"w1": ("A",)}, {"w1": ("B",)}]).splitlines()
    lines[1] = mutate(json.loads(lines[1]))
    with pytest.raises(OutputManifestError, match=message):
        parse_output_manifest(lines, label_attribute=ATTRIBUTE, tasks={t.task_id: t for t in tasks},
                              source="s3://b/out.manifest")


@pytest.mark.parametrize(("event", "message"), [
    ({}, r"event field 'dataObject.source' is missing"),
    ({"dataObject": {"source": ["a"]}}, r"'dataObject.source' must be str, got list"),
    ({"dataObject": {"source": "{not json"}}, r"'dataObject.source' is not JSON"),
    ({"dataObject": {"source": "[" * 100_000 + "]" * 100_000}}, r"'dataObject.source' is not JSON"),
    ({"dataObject": {"source": json.dumps({"task_id": "t"})}}, r"must be a task with string fields"),
])
def test_pre_annotation_names_what_is_wrong_with_an_event(event: dict, message: str) -> None:
    with pytest.raises(LambdaEventError, match=message):
        pre_annotation(event)


def test_consolidation_names_what_is_wrong_with_an_event_or_payload(aws, monkeypatch) -> None:
    s3 = boto3.client("s3")
    with pytest.raises(LambdaEventError, match=r"event field 'payload.s3Uri' is missing"):
        consolidate({"labelAttributeName": ATTRIBUTE}, s3=s3, allowed_buckets={BUCKET})
    with pytest.raises(LambdaEventError, match=r"'payload.s3Uri' must be s3://bucket/key"):
        consolidate({"payload": {"s3Uri": "https://x"}, "labelAttributeName": ATTRIBUTE}, s3=s3,
                    allowed_buckets={BUCKET})
    event = {"payload": {"s3Uri": f"s3://{BUCKET}/gt-bad/request.json"}, "labelAttributeName": ATTRIBUTE}
    for body, message in ((b"{}", r"must be a list of data objects, got dict"),
                          (b"[{}]", r"\[0\]: needs 'datasetObjectId' and a list of 'annotations'"),
                          (json.dumps([{"datasetObjectId": "0", "annotations": [
                              {"workerId": None, "annotationData": {"content": "{}"}}]}]).encode(),
                           r"\[0\].annotations\[0\]: needs a non-empty 'workerId' string")):
        s3.put_object(Bucket=BUCKET, Key="gt-bad/request.json", Body=body)
        with pytest.raises(LambdaEventError, match=message):
            consolidate(event, s3=s3, allowed_buckets={BUCKET})
    monkeypatch.setenv("RLHF_GT_PAYLOAD_BUCKETS", "gt-output-bucket")
    with pytest.raises(LambdaEventError, match=r"names bucket 'rlhf-sagemaker', which is not a configured payload "
                                               r"bucket \(RLHF_GT_PAYLOAD_BUCKETS='gt-output-bucket'\)"):
        consolidate(event, s3=s3)


def test_pre_annotation_shows_workers_the_blinded_fields_only() -> None:
    source = {"task_id": "t-1", "prompt": "p", "response_a": "a", "response_b": "b", "rlhf_shown_as": "A"}
    shown = pre_annotation({"dataObject": {"source": json.dumps(source)}})["taskInput"]
    assert shown == {"task_id": "t-1", "prompt": "p", "response_a": "a", "response_b": "b"}


def test_job_spec_is_validated() -> None:
    with pytest.raises(ValueError, match="job_name"):
        GroundTruthJobSpec(**{**SPEC.model_dump(), "job_name": "bad name!"})
    with pytest.raises(ValueError, match="s3_prefix"):
        GroundTruthJobSpec(**{**SPEC.model_dump(), "s3_prefix": "/local/dir"})
