"""The recipe in miniature: `gptj_6b` exactly as configured (GPT-J, rm-static's own held-out split, the pretrained
`Dahoas/gptj-rm-static`, published Detoxify, SageMaker with 8-process accelerate + DeepSpeed ZeRO-2 bf16 on
p4d), with only sizes shrunk, through the SageMaker backend (moto + the real training toolkit) and with the
jobs' network cut: pip has no index and the hub is unreachable, except for the jobs that stage outside sources,
which see the hub mirror. Every other job must pass on the pinned snapshots alone.

Every step program runs as a job; DPO's evaluation suite, the declared prompt sets' toxicity (red team) and the
policy comparison are left out: they run the same step programs again on other inputs (each job here costs ~11 s
of toolkit and interpreter start-up, and CI has 15 minutes), and the tiny graph runs them on every build."""

from pathlib import Path
from typing import Any

import pytest
from dagster import AssetKey, AssetSelection, materialize

from rlhf_assets.compute.backend import ComputeBackend
from rlhf_assets.compute.hardware import REACHES_OUTSIDE, STEP_HARDWARE, Hardware
from rlhf_assets.compute.local import LocalComputeBackend
from rlhf_assets.compute.sagemaker import SageMakerComputeBackend
from rlhf_assets.defs.comparison.assets import COMPARISON_KEY
from rlhf_assets.defs.evaluation.suite import POLICIES, prompt_set_toxicity_keys, sft_baseline_keys, suite_keys
from rlhf_assets.defs.human_eval.assets import WAITS_FOR_PEOPLE
from rlhf_assets.miniature.mirror import mirror_environment
from rlhf_assets.resources import ArtifactStoreResource, LabelingResource, ManifestIOManager, PresetResource
from tests.conftest import SETTINGS, all_assets, project_instance
from tests.moto_aws import BUCKET
from tests.sagemaker_platform import SageMakerPlatform

pytestmark = pytest.mark.aws

ROLE = "arn:aws:iam::123456789012:role/rlhf-sagemaker"


@pytest.fixture(scope="module")
def recipe(aws, hub_mirror: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("recipe-miniature")
    store = f"s3://{BUCKET}/recipe"
    resources: dict[str, Any] = {
        "preset": PresetResource(name="gptj_6b", miniature=True),
        "io_manager": ManifestIOManager(base_dir=f"{store}/manifests"),
        "artifacts": ArtifactStoreResource(root=store),
        "compute": ComputeBackend(local=LocalComputeBackend(scratch_dir=str(root / "scratch")),
                                  # The derived image (deploy/sagemaker/Dockerfile) that holds the job's packages:
                                  # no pip at each of the 17 job starts; the pip path is the CLI test's.
                                  sagemaker=SageMakerComputeBackend(role_arn=ROLE, bucket=BUCKET,
                                                                    poll_interval_seconds=0.2,
                                                                    message_interval_seconds=0.5,
                                                                    install_requirements=False)),
        "labeling": LabelingResource(db_path=str(root / "labels.sqlite")),
    }
    dpo = next(policy for policy in POLICIES if policy.asset == "dpo_policy")
    declared = SETTINGS.prompt_set_names
    prompt_sets = [key for policy in POLICIES for key in prompt_set_toxicity_keys(policy, declared).values()]
    prompt_sets += [key for key in sft_baseline_keys(declared)
                    if key.path[-1] not in ("eval_responses", "toxicity_scores")]
    selection = (AssetSelection.all() - AssetSelection.tag(*WAITS_FOR_PEOPLE)
                 - AssetSelection.assets(*suite_keys(dpo, declared), dpo.key("human_eval_tasks"), *prompt_sets,
                                         COMPARISON_KEY))
    with SageMakerPlatform(root / "container", outside=mirror_environment(hub_mirror)) as platform, \
            project_instance(root) as instance:
        result = materialize(all_assets, selection=selection, resources=resources, instance=instance,
                             raise_on_error=False)
        logs = "\n".join(str(entry.user_message) for entry in instance.all_logs(result.run_id))
        yield result, platform, instance, logs


def test_the_whole_recipe_graph_runs_on_snapshots_with_the_jobs_network_cut(recipe) -> None:
    result, platform, instance, logs = recipe
    failed = [(job["Environment"]["RLHF_STEP"], log[-2500:]) for job, code, log
              in zip(platform.requests, platform.exit_codes, platform.logs, strict=False) if code != 0]
    assert len(platform.exit_codes) == len(platform.requests), logs[-4000:]
    assert result.success and not failed, failed or logs[-4000:]
    steps = {job["Environment"]["RLHF_STEP"] for job in platform.requests}
    assert steps == set(STEP_HARDWARE), "every step program ran as a SageMaker job"
    for job in platform.requests:
        step, environment = job["Environment"]["RLHF_STEP"], job["Environment"]
        assert (environment.get("HF_HUB_OFFLINE") == "1") == (step not in REACHES_OUTSIDE), step
    reward = instance.get_latest_materialization_event(AssetKey("reward_model")).asset_materialization
    assert reward.metadata["mode"].value == "pretrained" and reward.metadata["readout"].value.startswith("eos")
    assert "loading trlx reward model Dahoas/gptj-rm-static from" in logs


def test_only_gpu_work_starts_gpu_instances(recipe) -> None:
    _, platform, _, _ = recipe
    for job in platform.requests:
        step, instance_type = job["Environment"]["RLHF_STEP"], job["ResourceConfig"]["InstanceType"]
        # the pretrained reward model is converted and scored, not trained: one GPU
        hardware = Hardware.GPU if job["TrainingJobName"].startswith("rlhf-reward-model-") else STEP_HARDWARE[step]
        expected = {Hardware.CPU: "ml.m5.xlarge", Hardware.GPU: "ml.g6e.xlarge",
                    Hardware.TRAINING: "ml.p4d.24xlarge"}[hardware]
        assert instance_type == expected, (step, instance_type)


def test_the_recipes_zero2_launch_runs_on_two_ranks(recipe) -> None:
    """accelerate launch with zero2_bf16.yaml on two CPU ranks: DeepSpeed's CPU accelerator over gloo, bf16."""
    _, platform, _, logs = recipe
    training = [job for job in platform.requests if STEP_HARDWARE[job["Environment"]["RLHF_STEP"]] is Hardware.TRAINING
                and not job["TrainingJobName"].startswith("rlhf-reward-model-")]
    assert {job["Environment"]["RLHF_ACCELERATE_CONFIG"] for job in training} == {
        "rlhf_assets/compute/accelerate/zero2_bf16.yaml"}
    assert {job["Environment"]["RLHF_NUM_PROCESSES"] for job in training} == {"2"}
    # SFT, the judge, DPO (TRL's trainers) and PPO (ours) each log their launch; the pretrained reward model trains
    # nothing.
    assert logs.count("launch: DeepSpeed ZeRO-2, bf16, 2 ranks over gloo") == 4, logs[-3000:]
