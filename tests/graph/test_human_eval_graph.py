"""The human-eval loop on the tiny graph: tasks queued by the asset, labelled over HTTP, the sensor, the results."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import stat
import time
from pathlib import Path

import boto3
import pytest
import requests
from botocore.stub import Stubber
from dagster import AssetKey, Definitions, RunRequest, SkipReason, build_sensor_context, materialize

from rlhf_assets.defs.human_eval.automation import collect_human_eval
from rlhf_assets.labeling.store import LabelStore
from rlhf_assets.labeling.tasks import read_tasks
from rlhf_assets.resources import LabelingResource
from tests.conftest import DEFINITIONS, all_assets, artifact_dir, forked_project, graph_resources, manifest_of
from tests.labeling_helpers import acknowledge_guidelines, described_job, ground_truth_output, labeling_server
from tests.leaks import files_containing
from tests.moto_aws import BUCKET

pytestmark = pytest.mark.graph
PPO_TASKS, PPO_RESULTS = AssetKey(["ppo_policy", "human_eval_tasks"]), AssetKey(["ppo_policy", "human_eval_results"])
human_eval_labels_complete, dpo_labels_complete = (
    DEFINITIONS.get_sensor_def(name)
    for name in ("human_eval_labels_complete_ppo_policy", "human_eval_labels_complete_dpo_policy"))


def _tick(instance, root, sensor=human_eval_labels_complete):
    context = build_sensor_context(instance=instance, resources={"labeling": graph_resources(root)["labeling"]})
    return sensor(context)


def test_tasks_are_blinded_queued_and_exported_for_ground_truth(graph) -> None:
    root, instance, _ = graph
    manifest = manifest_of(instance, root, "ppo_policy/human_eval_tasks")
    directory = artifact_dir(instance, root, "ppo_policy/human_eval_tasks")
    tasks = read_tasks(directory / "tasks.jsonl")
    assert len(tasks) == 100 and manifest.counts["tasks"] == 100
    assert 30 < sum(t.rlhf_shown_as == "A" for t in tasks) < 70  # a coin per prompt, recorded
    guidelines = (directory / "guidelines.md").read_text()
    assert guidelines.startswith("Content warning") and "About the same" in guidelines
    assert manifest.config["guidelines_sha256"] == hashlib.sha256(guidelines.strip().encode()).hexdigest()
    assert "Content warning" in (directory / "groundtruth" / "template.liquid.html").read_text()
    lines = (directory / "groundtruth" / "input.manifest").read_text().splitlines()
    assert len(lines) == 100
    for line in lines:
        shown = json.loads(json.loads(line)["source"])
        assert set(shown) == {"task_id", "prompt", "response_a", "response_b"}
    # Blinding survives reading the store and the UI: what pairs a task with its policy is owner-only, and the
    # tasks' preview shows no reply text to match against eval_responses' (policy-labelled) preview.
    for paired in (directory, artifact_dir(instance, root, "ppo_policy/eval_responses")):
        modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in paired.rglob("*")}
        assert all(mode & 0o077 == 0 for mode in modes.values()), modes
    preview = instance.get_latest_materialization_event(PPO_TASKS).asset_materialization
    assert "response_a" not in str(preview.metadata["preview"].value)
    store = LabelStore(root / "labeling" / "labels.sqlite")
    dpo = manifest_of(instance, root, "dpo_policy/human_eval_tasks")
    assert sorted(store.active_batches()) == sorted([manifest.config["batch_id"], dpo.config["batch_id"]]), \
        "each policy's pairs are queued, neither replaces the other"
    assert store.progress(manifest.config["batch_id"]).tasks == store.progress(dpo.config["batch_id"]).tasks == 100


def test_labels_through_the_app_trigger_the_sensor_and_the_results(graph) -> None:
    root, instance, _ = graph
    resources = graph_resources(root)
    tick = _tick(instance, root)
    assert isinstance(tick, SkipReason) and "0 of 100 labels" in tick.skip_message

    early = materialize(all_assets, selection=[PPO_RESULTS], resources=resources,
                        instance=instance, raise_on_error=False)
    assert not early.success
    failure = early.get_step_failure_events()[0].step_failure_data.error.message
    assert "0 of 100 tasks have their 1 label(s)" in failure and "allow_partial" in failure

    manifest = manifest_of(instance, root, "ppo_policy/human_eval_tasks")
    tasks_file = artifact_dir(instance, root, "ppo_policy/human_eval_tasks") / "tasks.jsonl"
    key = {t.task_id: t for t in read_tasks(tasks_file)}
    dpo_key = {t.task_id: t for t in read_tasks(artifact_dir(instance, root, "dpo_policy/human_eval_tasks")
                                                / "tasks.jsonl")}
    store = LabelStore(root / "labeling" / "labels.sqlite")
    token = store.add_annotator("rater")
    expected: dict[int, str] = {}
    dpo_labelled = 0
    with labeling_server(store.path) as url:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        for _ in range(2):  # one policy's batch, then the other's (each with its guidelines first)
            acknowledge_guidelines(url, dict(session.headers))
            while (shown := session.get(url + "/api/next", timeout=10)).status_code == 200:
                task_id = shown.json()["task_id"]
                if task_id in dpo_key:  # DPO's pairs: every one a tie
                    choice, dpo_labelled = "tie", dpo_labelled + 1
                else:
                    task = key[task_id]
                    index = len(expected)  # the recipe's result: 30 RLHF wins, 54 ties, 16 SFT wins
                    outcome = "win" if index < 30 else "tie" if index < 84 else "loss"
                    choice = {"win": task.rlhf_shown_as, "tie": "tie",
                              "loss": "B" if task.rlhf_shown_as == "A" else "A"}[outcome]
                    expected[task.prompt_id] = outcome
                assert session.post(url + "/api/labels", json={"task_id": task_id, "choice": choice},
                                    timeout=10).status_code == 201
    assert len(expected) == 100 and dpo_labelled == 100

    tick = _tick(instance, root)
    assert isinstance(tick, RunRequest) and tick.tags["rlhf/batch"] == manifest.config["batch_id"]
    assert [k.to_user_string() for k in tick.asset_selection] == ["ppo_policy/human_eval_results"]
    job = Definitions(assets=all_assets, jobs=[collect_human_eval], resources=resources).resolve_job_def(
        "collect_human_eval")
    run = job.execute_in_process(instance=instance, tags=tick.tags, asset_selection=tick.asset_selection)
    assert run.success
    dpo_tick = _tick(instance, root, dpo_labels_complete)
    assert isinstance(dpo_tick, RunRequest) and dpo_tick.tags["rlhf/policy"] == "dpo_policy"
    assert job.execute_in_process(instance=instance, tags=dpo_tick.tags, asset_selection=dpo_tick.asset_selection)\
        .success
    dpo_results = manifest_of(instance, root, "dpo_policy/human_eval_results")
    assert (dpo_results.counts["wins"], dpo_results.counts["ties"], dpo_results.counts["losses"]) == (0, 100, 0)
    # Issue 26 (6): with people's labels recorded, the comparison shows how the automatic judge agrees with them.
    assert materialize(all_assets, selection=[AssetKey("policy_comparison")], resources=resources,
                       instance=instance).success
    people = instance.get_latest_materialization_event(AssetKey("policy_comparison")).asset_materialization \
        .metadata["judge_vs_people"].value
    assert "**PPO**: Cohen's κ" in people and "**DPO**: Cohen's κ undefined" not in people
    assert people.count("n = 100 prompts") == 2 and "| judge win |" in people
    metadata = instance.get_latest_materialization_event(PPO_RESULTS).asset_materialization.metadata
    assert (metadata["wins"].value, metadata["ties"].value, metadata["losses"].value) == (30, 54, 16)
    assert metadata["win_or_tie_rate"].value == pytest.approx(0.84)
    assert metadata["win_or_tie_rate_low"].value == pytest.approx(0.7558, abs=5e-4)
    assert metadata["sign_test_p"].value == pytest.approx(0.054076, abs=1e-6)
    assert "fleiss_kappa" not in metadata  # one annotator per prompt
    table = metadata["per_prompt"].value.records
    assert len(table) == 100 and {r.data["prompt_id"]: r.data["outcome"] for r in table} == expected
    assert "| RLHF preferred | 30 / 100 | 30 / 100 |" in metadata["comparison"].value
    tasks_config = manifest_of(instance, root, "ppo_policy/human_eval_tasks").config
    assert tasks_config["guidelines_sha256"] in metadata["guidelines"].value, "which guidelines produced the labels"
    assert next(iter(metadata)) == "summary" and "Recipe: 30 / 54 / 16" in metadata["summary"].value

    # Over-filling is refused at the door (issue 15, item 6); should a label get past it (a database written
    # before that check), only the earliest `overlap` labels of a task count, and the excess is reported.
    second = store.add_annotator("second")
    won = next(t for t in key.values() if expected[t.prompt_id] == "win")
    flipped = "B" if won.rlhf_shown_as == "A" else "A"
    with labeling_server(store.path) as url:
        acknowledge_guidelines(url, {"Authorization": f"Bearer {second}"})
        refused = requests.post(url + "/api/labels", json={"task_id": won.task_id, "choice": flipped},
                                headers={"Authorization": f"Bearer {second}"}, timeout=10)
    assert refused.status_code == 409 and "1 of 1 label(s)" in refused.json()["error"]
    with sqlite3.connect(store.path) as db:
        db.execute("INSERT INTO labels (task_id, annotator, choice, comment, rlhf_shown_as, created_at) "
                   "VALUES (?, 'second', ?, '', ?, ?)", (won.task_id, flipped, won.rlhf_shown_as, time.time()))
    assert materialize(all_assets, selection=[PPO_RESULTS], resources=resources,
                       instance=instance).success
    metadata = instance.get_latest_materialization_event(PPO_RESULTS).asset_materialization.metadata
    assert (metadata["wins"].value, metadata["ties"].value, metadata["losses"].value) == (30, 54, 16)
    assert metadata["excess_labels"].value == 1

    tick = _tick(instance, root)
    assert isinstance(tick, SkipReason) and "already has results" in tick.skip_message
    # The annotator's token is nowhere: not in the instance (event log, compute logs), the artifacts, the
    # labeling database (it keeps a digest) or the app's log.
    assert files_containing(token, Path(instance.root_directory), root) == []


@pytest.mark.aws
def test_ground_truth_channel_from_job_to_results(graph, aws, tmp_path, monkeypatch) -> None:
    """human_eval_tasks starts a Ground Truth job; the sensor waits for it; results parse its output manifest."""
    root, _, _ = graph
    labeling = LabelingResource(
        db_path=str(tmp_path / "labels.sqlite"), gt_s3_prefix=f"s3://{BUCKET}/human-eval",
        gt_role_arn="arn:aws:iam::123456789012:role/gt",
        gt_workteam_arn="arn:aws:sagemaker:us-east-1:123456789012:workteam/private-crowd/rlhf",
        gt_pre_annotation_lambda_arn="arn:aws:lambda:us-east-1:123456789012:function:rlhf-gt-pre",
        gt_consolidation_lambda_arn="arn:aws:lambda:us-east-1:123456789012:function:rlhf-gt-consolidate")
    resources = {**graph_resources(tmp_path), "labeling": labeling}  # a copy: the shared graph stays as it is
    sagemaker = boto3.client("sagemaker")
    monkeypatch.setattr(LabelingResource, "sagemaker_client", lambda self: sagemaker)
    output_uri = f"s3://{BUCKET}/human-eval/output/rlhf-eval/manifests/output/output.manifest"

    def described(status: str, job_name: str) -> dict:
        return described_job(labeling.ground_truth_spec(job_name, 2), status,
                             output_uri if status == "Completed" else None)

    with forked_project(root, tmp_path) as instance, Stubber(sagemaker) as stub:
        stub.add_client_error("describe_labeling_job", service_error_code="ResourceNotFound", http_status_code=400)
        stub.add_response("create_labeling_job", {"LabelingJobArn": "arn:aws:sagemaker:::labeling-job/rlhf-eval"})
        run_config = {"ops": {"ppo_policy__human_eval_tasks": {"config": {"channel": "ground_truth", "overlap": 2}}}}
        assert materialize(all_assets, selection=[PPO_TASKS], resources=resources,
                           instance=instance, run_config=run_config).success
        manifest = manifest_of(instance, tmp_path, "ppo_policy/human_eval_tasks")
        assert manifest.config["channel"] == "ground_truth" and manifest.config["job_name"].startswith("rlhf-eval-")
        assert LabelStore(tmp_path / "labels.sqlite").active_batch() is None  # nothing queued in the app
        s3 = boto3.client("s3")
        uploaded = s3.get_object(Bucket=BUCKET, Key="human-eval/input.manifest")["Body"].read().decode()
        assert len(uploaded.splitlines()) == 100

        tasks = read_tasks(artifact_dir(instance, tmp_path, "ppo_policy/human_eval_tasks") / "tasks.jsonl")
        # Two workers: they agree on every prompt except the last 10, where w2 says tie instead.
        answers = [{"w1": (t.rlhf_shown_as,), "w2": (t.rlhf_shown_as if i < 90 else "tie",)}
                   for i, t in enumerate(tasks)]
        bucket_key = output_uri.removeprefix(f"s3://{BUCKET}/")
        s3.put_object(Bucket=BUCKET, Key=bucket_key, Body=ground_truth_output(tasks, answers).encode())

        context = build_sensor_context(instance=instance, resources={"labeling": labeling})
        stub.add_response("describe_labeling_job", described("InProgress", manifest.config["job_name"]))
        tick = human_eval_labels_complete(context)
        assert isinstance(tick, SkipReason) and "is InProgress" in tick.skip_message
        stub.add_response("describe_labeling_job", described("Completed", manifest.config["job_name"]))
        assert isinstance(human_eval_labels_complete(context), RunRequest)
        stub.add_response("describe_labeling_job", described("Completed", manifest.config["job_name"]))
        assert materialize(all_assets, selection=[PPO_RESULTS], resources=resources,
                           instance=instance).success
        stub.assert_no_pending_responses()
        metadata = instance.get_latest_materialization_event(
            PPO_RESULTS).asset_materialization.metadata
    # Per prompt: 90 agreed wins; 10 split win/tie count as ties (no strict majority).
    assert (metadata["wins"].value, metadata["ties"].value, metadata["losses"].value) == (90, 10, 0)
    assert (metadata["labels"].value, metadata["annotators"].value) == (200, 2)
    # Fleiss by hand: categories win 190/200, tie 10/200 → P̄e = 0.905; P̄ = (90·1 + 10·0) / 100 = 0.9.
    assert metadata["fleiss_kappa"].value == pytest.approx((0.9 - 0.905) / (1 - 0.905))
