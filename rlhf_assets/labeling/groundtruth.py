"""SageMaker Ground Truth: the input manifest, the pairwise worker template, the job request and the output parser.

Each input manifest line carries the blinded task as a JSON string in `source` (Ground Truth passes the line to
the pre-annotation Lambda as `dataObject`; `labeling.groundtruth_lambdas` turns it into the template's
`task.input`). The consolidation Lambda keeps every worker's answer, so the output manifest holds, per line,
`{label_attribute: {"annotationsFromAllWorkers": [{"workerId", "annotationData": {"content": "<json>"}}]}}`
where the content is what the `crowd-form` submitted: `{"prefer_a": {"A": true}, ..., "comment": "..."}`.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError
from pydantic import BaseModel, Field

from rlhf_assets.labeling.tasks import Choice, PairwiseTask

TEMPLATE_PATH = Path(__file__).parent / "templates" / "groundtruth_pairwise.liquid.html"
RADIO_BUTTONS = {"prefer_a": Choice.a, "tie": Choice.tie, "prefer_b": Choice.b}


class OutputManifestError(ValueError):
    """A Ground Truth output line that cannot be mapped back to a task, naming the file, line and field."""


class GroundTruthJobSpec(BaseModel):
    """Everything `create_labeling_job` needs beyond the tasks (see docs/human-evaluation.md: Ground Truth)."""

    job_name: str = Field(pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$", description="Unique per account+region")
    s3_prefix: str = Field(pattern=r"^s3://", description="s3://bucket/prefix for manifest, template and output")
    role_arn: str = Field(description="IAM role Ground Truth assumes (S3 read/write, invoke the Lambdas)")
    workteam_arn: str = Field(description="Private or vendor workteam ARN")
    pre_annotation_lambda_arn: str = Field(description="Deployed `groundtruth_lambdas.pre_annotation`")
    consolidation_lambda_arn: str = Field(description="Deployed `groundtruth_lambdas.consolidate`")
    label_attribute: str = Field(default="rlhf-preference", pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,126}$")
    workers_per_task: int = Field(default=1, ge=1, le=9, description="Annotators per pair (the overlap)")
    task_time_limit_seconds: int = Field(default=600, ge=30, le=28800)
    task_availability_seconds: int = Field(default=10 * 24 * 3600, ge=60, le=30 * 24 * 3600)
    max_concurrent_tasks: int = Field(default=100, ge=1, le=5000)


@dataclass(frozen=True)
class GroundTruthLabel:
    """One worker's answer, mapped back to our task id."""

    task_id: str
    worker_id: str
    choice: Choice
    comment: str


def input_manifest(tasks: Iterable[PairwiseTask]) -> str:
    """JSON Lines: one blinded task per line (no model names, no order key)."""
    return "".join(json.dumps({"source": json.dumps(task.blinded(), ensure_ascii=False)}, ensure_ascii=False) + "\n"
                   for task in tasks)


GUIDELINES_MARKER = "<!-- GUIDELINES -->"


def worker_template(guidelines: str) -> str:
    """The Liquid/crowd-HTML template workers see, with the batch's guidelines as its full instructions.

    Task text is escaped by Liquid (`| escape`) at labeling time; the guidelines are escaped here, one paragraph
    per blank-line-separated block, and Liquid braces in them are escaped too so they cannot become template code.
    """
    paragraphs = [html.escape(block.strip()).replace("{", "&#123;").replace("}", "&#125;")
                  for block in guidelines.split("\n\n") if block.strip()]
    body = "\n".join(f"<p>{paragraph}</p>".replace("\n", "<br>") for paragraph in paragraphs)
    return TEMPLATE_PATH.read_text(encoding="utf-8").replace(GUIDELINES_MARKER, body)


def job_request(spec: GroundTruthJobSpec, manifest_uri: str, template_uri: str) -> dict[str, Any]:
    """The `create_labeling_job` parameters for a custom pairwise task."""
    return {
        "LabelingJobName": spec.job_name,
        "LabelAttributeName": spec.label_attribute,
        "InputConfig": {
            "DataSource": {"S3DataSource": {"ManifestS3Uri": manifest_uri}},
            "DataAttributes": {"ContentClassifiers": ["FreeOfPersonallyIdentifiableInformation"]},
        },
        "OutputConfig": {"S3OutputPath": f"{spec.s3_prefix.rstrip('/')}/output/"},
        "RoleArn": spec.role_arn,
        "HumanTaskConfig": {
            "WorkteamArn": spec.workteam_arn,
            "UiConfig": {"UiTemplateS3Uri": template_uri},
            "PreHumanTaskLambdaArn": spec.pre_annotation_lambda_arn,
            "TaskTitle": "Which assistant response is better?",
            "TaskDescription": "Compare two responses to the same conversation; pick the better one or a tie.",
            "TaskKeywords": ["text", "comparison", "preference"],
            "NumberOfHumanWorkersPerDataObject": spec.workers_per_task,
            "TaskTimeLimitInSeconds": spec.task_time_limit_seconds,
            "TaskAvailabilityLifetimeInSeconds": spec.task_availability_seconds,
            "MaxConcurrentTaskCount": spec.max_concurrent_tasks,
            "AnnotationConsolidationConfig": {"AnnotationConsolidationLambdaArn": spec.consolidation_lambda_arn},
        },
        "Tags": [{"Key": "rlhf-assets", "Value": "human_eval_tasks"}],
    }


def start_labeling_job(sagemaker: Any, s3: Any, spec: GroundTruthJobSpec, tasks: Sequence[PairwiseTask],
                       guidelines: str) -> str:
    """Upload the manifest and template under `spec.s3_prefix` and create the job; returns its ARN.

    Job names are unique per account and the name carries the batch hash, so a job that already exists is this
    batch's: re-materializing returns it instead of failing on the duplicate name (or paying for it twice).
    """
    try:
        return sagemaker.describe_labeling_job(LabelingJobName=spec.job_name)["LabelingJobArn"]
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") not in ("ResourceNotFound", "ValidationException"):
            raise
    bucket, _, prefix = spec.s3_prefix.removeprefix("s3://").partition("/")
    prefix = prefix.strip("/")
    keys = {name: f"{prefix}/{name}" if prefix else name for name in ("input.manifest", "template.liquid.html")}
    s3.put_object(Bucket=bucket, Key=keys["input.manifest"], Body=input_manifest(tasks).encode())
    s3.put_object(Bucket=bucket, Key=keys["template.liquid.html"], Body=worker_template(guidelines).encode())
    request = job_request(spec, f"s3://{bucket}/{keys['input.manifest']}", f"s3://{bucket}/{keys['template.liquid.html']}")
    return sagemaker.create_labeling_job(**request)["LabelingJobArn"]


def parse_answer(content: Mapping[str, Any]) -> tuple[Choice, str]:
    """(choice, comment) from one worker's crowd-form submission; exactly one radio button must be on."""
    chosen = [choice for name, choice in RADIO_BUTTONS.items()
              if isinstance(content.get(name), Mapping) and content[name].get(choice.value) is True]
    if len(chosen) != 1:
        raise ValueError(f"expected exactly one of {sorted(RADIO_BUTTONS)} selected, got {len(chosen)}")
    comment = content.get("comment", "")
    return chosen[0], comment if isinstance(comment, str) else ""


def _content(content: Any) -> Mapping[str, Any]:
    """A worker's submission: Ground Truth stores the crowd form as a JSON object inside a string."""
    if not isinstance(content, str):
        raise ValueError(f"annotationData.content must be a JSON string, got {type(content).__name__}")
    parsed = json.loads(content)
    if not isinstance(parsed, Mapping):
        raise ValueError(f"annotationData.content must hold a JSON object, got {type(parsed).__name__}")
    return parsed


def parse_output_manifest(
    lines: Iterable[str], *, label_attribute: str, tasks: Mapping[str, PairwiseTask], source: str
) -> list[GroundTruthLabel]:
    """Every worker answer in an output manifest; any malformed line is an error naming `source` and the line.

    Parsing reads only: a bad line changes nothing stored. A worker answering the same task twice (Ground Truth
    does not do this, but a hand-merged manifest might) keeps their first answer.
    """
    labels: dict[tuple[str, str], GroundTruthLabel] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{source}:{number}"
        try:
            record = json.loads(line)
            task_id = json.loads(record["source"])["task_id"]
        except RecursionError:
            raise OutputManifestError(f"{where}: nested too deeply to be a Ground Truth output line") from None
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise OutputManifestError(f"{where}: field 'source' does not hold a task ({error})") from None
        if not isinstance(task_id, str):
            raise OutputManifestError(f"{where}: field 'source.task_id' must be a string, got {type(task_id).__name__}")
        if task_id not in tasks:
            raise OutputManifestError(f"{where}: unknown task {task_id!r} (not in this human_eval_tasks batch)")
        answers = record.get(label_attribute)
        if not isinstance(answers, Mapping) or not isinstance(answers.get("annotationsFromAllWorkers"), list):
            raise OutputManifestError(f"{where}: field {label_attribute!r} lacks 'annotationsFromAllWorkers'")
        for index, answer in enumerate(answers["annotationsFromAllWorkers"]):
            field = f"{label_attribute}.annotationsFromAllWorkers[{index}]"
            try:
                worker = answer["workerId"]
                if not isinstance(worker, str) or not worker.strip():
                    raise ValueError(f"workerId must be a non-empty string, got {worker!r}: answers without a worker "
                                     "cannot be told apart")
                choice, comment = parse_answer(_content(answer["annotationData"]["content"]))
            except RecursionError:
                raise OutputManifestError(f"{where}: field {field}.annotationData.content is nested too deeply") \
                    from None
            except (KeyError, TypeError, ValueError) as error:
                raise OutputManifestError(f"{where}: field {field}: {error}") from None
            labels.setdefault((task_id, worker), GroundTruthLabel(task_id, worker, choice, comment))
    return list(labels.values())
