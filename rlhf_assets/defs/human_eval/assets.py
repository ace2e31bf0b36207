"""Human evaluation assets of every policy: blinded pairwise tasks for annotators, and the results once labelled.

Each policy (`defs/evaluation/suite.POLICIES`) gets `human_eval_tasks` and `human_eval_results` under its key
prefix, alike for every policy (`ppo_policy/human_eval_tasks`, `dpo_policy/human_eval_tasks`, ...). The tasks
asset queues the tasks where people label them (the local app's database, where each policy's latest batch waits
beside the others', or a SageMaker Ground Truth job); the policy's labels-complete sensor requests its results when
every task has its labels. Both are light work in the Dagster process: no step program, no GPU.
"""

import hashlib
import json
import tempfile
from pathlib import Path

import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetsDefinition,
    Config,
    Failure,
    MetadataValue,
    Output,
    TableColumn,
    TableRecord,
    TableSchema,
    asset,
)
from pydantic import Field

from rlhf_assets.code_versions import code_version
from rlhf_assets.defs.common import preview_table, publish
from rlhf_assets.defs.evaluation.suite import EvaluatedPolicy
from rlhf_assets.eval.human_preference import JudgedLabel, summarize_human_preference
from rlhf_assets.eval.preference import RECIPE_REFERENCE, PreferenceSummary
from rlhf_assets.eval.reporting import interval_text
from rlhf_assets.labeling.groundtruth import input_manifest, parse_output_manifest, start_labeling_job, worker_template
from rlhf_assets.labeling.tasks import (
    Choice,
    PairwiseTask,
    batch_id,
    build_tasks,
    read_guidelines,
    read_tasks,
    write_tasks,
)
from rlhf_assets.layouts import LABELS, PER_PROMPT, RESPONSES
from rlhf_assets.overrides import literal_enum, merged, override
from rlhf_assets.presets import HumanEvalSpec
from rlhf_assets.resources import ArtifactStoreResource, LabelingResource, PresetResource
from rlhf_assets.storage import Manifest

TASKS_FILE = "tasks.jsonl"
GT_MANIFEST_FILE = "groundtruth/input.manifest"
GT_TEMPLATE_FILE = "groundtruth/template.liquid.html"
GUIDELINES_FILE = "guidelines.md"


LabelingChannel = literal_enum(HumanEvalSpec, "channel", "LabelingChannel", "Where annotators label the tasks.")


class HumanEvalTasksConfig(Config):
    """How the pairs are blinded and where they are labelled (defaults: the preset's `human_eval`)."""

    overlap: int | None = override(HumanEvalSpec, "overlap")
    channel: LabelingChannel | None = override(HumanEvalSpec, "channel")  # type: ignore[valid-type]
    guidelines_file: str | None = override(HumanEvalSpec, "guidelines_file")


class HumanEvalResultsConfig(Config):
    """When results may be computed before every task has all its labels."""

    allow_partial: bool = Field(default=False, description="Summarize whatever labels exist instead of failing "
                                "while tasks still lack labels (the result says how many prompts it covers)")


def queue_tasks(
    context: AssetExecutionContext,
    config: HumanEvalTasksConfig,
    preset: PresetResource,
    artifacts: ArtifactStoreResource,
    labeling: LabelingResource,
    eval_responses: Manifest,
    results_key: AssetKey,
) -> Output[Manifest]:
    """One blinded SFT-vs-policy pair per eval prompt, in cryptographically random order, queued for annotators.

    The artifact holds the order key (`tasks.jsonl`) and the Ground Truth input manifest and worker template;
    the app's database or the Ground Truth job gets only the blinded text. In the app, the batch is queued under
    this asset's key, beside other policies' batches.
    """
    spec = merged(preset.get().human_eval, config)
    store = artifacts.store()
    responses = RESPONSES.read(store.verified_path(eval_responses))
    guidelines = read_guidelines(spec.guidelines_file)
    guidelines_sha256 = hashlib.sha256(guidelines.encode()).hexdigest()
    tasks = build_tasks(responses, guidelines=guidelines)
    batch = batch_id(tasks)
    extra: dict[str, MetadataValue] = {}
    if spec.channel == "app":
        tasks = labeling.store().register_batch(tasks, batch, spec.overlap, source=eval_responses.uri,
                                                guidelines=guidelines, stream=context.asset_key.to_user_string())
        context.log.info(f"queued {len(tasks)} tasks (batch {batch}, overlap {spec.overlap}) in {labeling.db_path}")
        extra["how_to_label"] = MetadataValue.md(
            f"Tasks are queued in `{labeling.db_path}`. Start the app with `rlhf-assets label --port 8080`, add "
            f"annotators with `rlhf-assets annotators add NAME`; "
            f"`{results_key.to_user_string()}` follows when all {len(tasks) * spec.overlap} labels exist.")
        job = {}
    else:
        job_name = f"rlhf-eval-{batch}"
        gt_spec = labeling.ground_truth_spec(job_name, spec.overlap)
        arn = start_labeling_job(labeling.sagemaker_client(), labeling.s3_client(), gt_spec, tasks, guidelines)
        context.log.info(f"started Ground Truth labeling job {job_name} ({arn})")
        job = {"job_name": job_name, "job_arn": arn, "label_attribute": gt_spec.label_attribute}
        extra["labeling_job_arn"] = MetadataValue.text(arn)
        extra["labeling_job_name"] = MetadataValue.text(job_name)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        write_tasks(tasks, directory / TASKS_FILE)
        (directory / "groundtruth").mkdir()
        (directory / GT_MANIFEST_FILE).write_text(input_manifest(tasks), encoding="utf-8")
        (directory / GT_TEMPLATE_FILE).write_text(worker_template(guidelines), encoding="utf-8")
        (directory / GUIDELINES_FILE).write_text(guidelines + "\n", encoding="utf-8")
        blinded = pd.DataFrame([task.blinded() for task in tasks])
        return publish(
            context, store, directory, preset=preset.name.value,
            config={**spec.model_dump(), "batch_id": batch, "guidelines_sha256": guidelines_sha256, **job},
            counts={"tasks": len(tasks), "required_labels": len(tasks) * spec.overlap,
                    "rlhf_shown_as_a": sum(task.rlhf_shown_as == "A" for task in tasks)},
            metadata={"batch_id": MetadataValue.text(batch), "channel": MetadataValue.text(spec.channel),
                      "overlap": MetadataValue.int(spec.overlap), **extra,
                      # No response text: next to `eval_responses`' preview (which names each reply's policy),
                      # task ids with their A/B texts would un-blind the batch for anyone who sees the UI.
                      "preview": preview_table(blinded, ["task_id", "prompt"])},
        )


def collect_labels(
    tasks_manifest: Manifest, tasks: dict[str, PairwiseTask], labeling: LabelingResource
) -> pd.DataFrame:
    """Every label for this batch, from the app's database or the Ground Truth output manifest, un-blinded."""
    config = tasks_manifest.config
    rows: list[dict[str, object]] = []
    if config["channel"] == "app":
        for label in labeling.store().labels(config["batch_id"]):
            rows.append({"task_id": label.task_id, "annotator": label.annotator, "choice": label.choice.value,
                         "comment": label.comment, "labelled_at": pd.Timestamp(label.created_at, unit="s")})
    else:
        job = labeling.sagemaker_client().describe_labeling_job(LabelingJobName=config["job_name"])
        output = job.get("LabelingJobOutput", {}).get("OutputDatasetS3Uri")
        if job["LabelingJobStatus"] != "Completed" or not output:
            raise Failure(f"Ground Truth job {config['job_name']} is {job['LabelingJobStatus']}; results need it "
                          "Completed")
        bucket, _, key = output.removeprefix("s3://").partition("/")
        body = labeling.s3_client().get_object(Bucket=bucket, Key=key)["Body"].read().decode("utf-8")
        for label in parse_output_manifest(body.splitlines(), label_attribute=config["label_attribute"],
                                           tasks=tasks, source=output):
            rows.append({"task_id": label.task_id, "annotator": label.worker_id, "choice": label.choice.value,
                         "comment": label.comment, "labelled_at": pd.NaT})
    frame = pd.DataFrame(rows, columns=["task_id", "annotator", "choice", "comment", "labelled_at"])
    frame["prompt_id"] = [tasks[task_id].prompt_id for task_id in frame["task_id"]]
    frame["rlhf_shown_as"] = [tasks[task_id].rlhf_shown_as for task_id in frame["task_id"]]
    frame["outcome"] = [tasks[t].outcome(Choice(c)) for t, c in zip(frame["task_id"], frame["choice"], strict=True)]
    return frame


def _rate(summary: PreferenceSummary) -> str:
    interval = summary.win_or_tie_rate
    return f"{interval.estimate:.0%} [{interval.low:.0%}, {interval.high:.0%}]"


def summarize_labels(
    context: AssetExecutionContext,
    config: HumanEvalResultsConfig,
    artifacts: ArtifactStoreResource,
    labeling: LabelingResource,
    human_eval_tasks: Manifest,
) -> Output[Manifest]:
    """The policy vs SFT by human judgement: wins / ties / losses, Wilson CIs, sign test, kappa, per prompt."""
    store = artifacts.store()
    tasks = {task.task_id: task for task in read_tasks(store.verified_path(human_eval_tasks) / TASKS_FILE)}
    labels = collect_labels(human_eval_tasks, tasks, labeling)
    overlap = int(human_eval_tasks.config["overlap"])
    counted = labels.groupby("task_id", sort=False).cumcount() < overlap  # the earliest `overlap` per task
    excess = int((~counted).sum())
    if excess:
        context.log.warning(f"{excess} label(s) beyond the overlap of {overlap} are not counted (earliest first)")
    labels = labels[counted].reset_index(drop=True)
    per_task = labels.groupby("task_id").size()
    complete = int((per_task >= overlap).sum())
    if complete < len(tasks) and not config.allow_partial:
        raise Failure(f"{complete} of {len(tasks)} tasks have their {overlap} label(s) ({len(labels)} labels in "
                      f"all); label the rest or set allow_partial: true")
    if labels.empty:
        raise Failure("no labels yet for batch " + human_eval_tasks.config["batch_id"])
    result = summarize_human_preference([JudgedLabel(int(p), str(a), str(o)) for p, a, o in
                                         labels[["prompt_id", "annotator", "outcome"]].itertuples(index=False)])
    by_prompt = {task.prompt_id: task for task in tasks.values()}
    outcomes = labels.groupby("prompt_id")["outcome"].agg(lambda values: json.dumps(sorted(values)))
    per_prompt = pd.DataFrame([
        {"prompt_id": prompt_id, "prompt": by_prompt[prompt_id].prompt, "outcome": outcome,
         "labels": outcomes[prompt_id], "rlhf_shown_as": by_prompt[prompt_id].rlhf_shown_as}
        for prompt_id, outcome in result.per_prompt.items()
    ])
    prompts = result.prompts
    win_rate, win_or_tie = prompts.win_rate, prompts.win_or_tie_rate
    reference = RECIPE_REFERENCE
    comparison = "\n".join([
        "| | ours (human) | recipe (human) |", "|---|---|---|",
        f"| RLHF preferred | {prompts.wins} / {prompts.total} | {reference['wins']} / 100 |",
        f"| tie | {prompts.ties} / {prompts.total} | {reference['ties']} / 100 |",
        f"| SFT preferred | {prompts.losses} / {prompts.total} | {reference['losses']} / 100 |",
        f"| preferred or tied (95% Wilson CI) | {_rate(prompts)} | 84% |",
        f"| sign test p (wins vs losses) | {result.sign_test_p:.2g} | — |",
    ])
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        LABELS.write(labels, directory)
        PER_PROMPT.write(per_prompt, directory)
        metrics = {"win_rate": win_rate.estimate, "win_rate_low": win_rate.low, "win_rate_high": win_rate.high,
                   "win_or_tie_rate": win_or_tie.estimate, "win_or_tie_rate_low": win_or_tie.low,
                   "win_or_tie_rate_high": win_or_tie.high, "sign_test_p": result.sign_test_p}
        if result.kappa is not None:
            metrics["fleiss_kappa"] = result.kappa
        return publish(
            context, store, directory, preset=human_eval_tasks.preset,
            config={"batch_id": human_eval_tasks.config["batch_id"], "channel": human_eval_tasks.config["channel"],
                    "guidelines_sha256": human_eval_tasks.config["guidelines_sha256"],
                    "allow_partial": config.allow_partial},
            counts={"wins": prompts.wins, "ties": prompts.ties, "losses": prompts.losses, "prompts": prompts.total,
                    "labels": len(labels), "excess_labels": excess, "annotators": result.annotators,
                    "complete_tasks": complete,
                    "label_wins": result.labels.wins, "label_ties": result.labels.ties,
                    "label_losses": result.labels.losses},
            metrics=metrics,
            metadata={"summary": MetadataValue.md(
                          f"**Human raters**, {prompts.total} prompts, {result.annotators} annotator(s): RLHF "
                          f"{prompts.wins} wins / {prompts.ties} ties / {prompts.losses} losses; preferred or tied "
                          f"{interval_text(win_or_tie.estimate, win_or_tie.low, win_or_tie.high, percent=True)}; "
                          f"sign test p = {result.sign_test_p:.2g}. Recipe: {reference['wins']} / "
                          f"{reference['ties']} / {reference['losses']}, 84% preferred or tied."),
                      "batch_id": MetadataValue.text(human_eval_tasks.config["batch_id"]),
                      "guidelines": MetadataValue.md(_guidelines_note(human_eval_tasks)),
                      "comparison": MetadataValue.md(comparison),
                      "annotators": MetadataValue.md(_annotator_shares(labels, labeling, human_eval_tasks)),
                      "per_prompt": _per_prompt_table(per_prompt)},
        )


def _annotator_shares(labels: pd.DataFrame, labeling: LabelingResource, tasks: Manifest) -> str:
    """Markdown: each annotator's labels, share of the batch and median time on a pair (the app records it), so a
    batch finished by one person in seconds is seen before its verdict is read."""
    times: dict[str, float | None] = {}
    if tasks.config["channel"] == "app":
        times = {entry.annotator: entry.median_seconds_on_pair
                 for entry in labeling.store().annotator_summary(tasks.config["batch_id"])}
    counts = labels.groupby("annotator").size().sort_values(ascending=False)
    lines = ["| annotator | labels | share | median seconds on a pair |", "|---|---|---|---|"]
    for annotator, count in counts.items():
        seconds = times.get(str(annotator))
        lines.append(f"| {annotator} | {count} | {count / len(labels):.0%} | "
                     f"{'—' if seconds is None else f'{seconds:.1f}'} |")
    return "\n".join(lines)


def _guidelines_note(tasks: Manifest) -> str:
    """Which guidelines the labels were given under: their hash and where the text is kept."""
    source = tasks.config["guidelines_file"] or "the default rlhf_assets/labeling/guidelines.md"
    return (f"Labels given under the guidelines with SHA-256 `{tasks.config['guidelines_sha256']}` "
            f"(from {source}; the text is `{GUIDELINES_FILE}` in the `human_eval_tasks` artifact).")


def _per_prompt_table(frame: pd.DataFrame) -> MetadataValue:
    """Every prompt's outcome as a typed table (prompt text clipped, shown as text, never as markup)."""
    schema = TableSchema(columns=[TableColumn("prompt_id", "int"), TableColumn("outcome", "string"),
                                  TableColumn("labels", "string"), TableColumn("prompt", "string")])
    records = [TableRecord({"prompt_id": int(row.prompt_id), "outcome": row.outcome, "labels": row.labels,
                            "prompt": str(row.prompt)[-200:]}) for row in frame.itertuples(index=False)]
    return MetadataValue.table(records, schema=schema)


WAITS_FOR_PEOPLE = ("rlhf/waits_for", "people")  # a tag: the main job leaves these out, a sensor requests them


def human_eval_suite(policy: EvaluatedPolicy) -> list[AssetsDefinition]:
    """`human_eval_tasks` and `human_eval_results` of one policy (prefixed like its evaluation suite)."""
    common = {"code_version": code_version("rlhf_assets.defs.human_eval.assets"), "group_name": "human_eval",
              "key_prefix": policy.prefix}

    @asset(name="human_eval_tasks", kinds={"sqlite", "json"}, ins={"eval_responses": AssetIn(
           key=policy.key("eval_responses"))}, description=f"{policy.asset} vs SFT: {queue_tasks.__doc__}", **common)
    def human_eval_tasks(context: AssetExecutionContext, config: HumanEvalTasksConfig, preset: PresetResource,
                         artifacts: ArtifactStoreResource, labeling: LabelingResource,
                         eval_responses: Manifest) -> Output[Manifest]:
        return queue_tasks(context, config, preset, artifacts, labeling, eval_responses,
                           policy.key("human_eval_results"))

    @asset(name="human_eval_results", kinds={"pandas", "parquet"}, tags=dict([WAITS_FOR_PEOPLE]),
           ins={"human_eval_tasks": AssetIn(key=policy.key("human_eval_tasks"))},
           description=f"{policy.asset} vs SFT: {summarize_labels.__doc__}", **common)
    def human_eval_results(context: AssetExecutionContext, config: HumanEvalResultsConfig,
                           artifacts: ArtifactStoreResource, labeling: LabelingResource,
                           human_eval_tasks: Manifest) -> Output[Manifest]:
        return summarize_labels(context, config, artifacts, labeling, human_eval_tasks)

    return [human_eval_tasks, human_eval_results]

