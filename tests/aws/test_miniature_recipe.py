"""The recipe in miniature: `gptj_6b` exactly as configured (GPT-J, rm-static's own held-out split, the pretrained
`Dahoas/gptj-rm-static`, published Detoxify, SageMaker with 8-process accelerate + DeepSpeed ZeRO-2 bf16 on
p4d), with only sizes shrunk, through the SageMaker backend (moto + the real training toolkit) and with the
jobs' network cut: pip has no index and the hub is unreachable, except for the jobs that stage outside sources,
which see the hub mirror. Every other job must pass on the pinned snapshots alone.

The run itself is `tests/recipe_miniature.py`, started when this module is collected so that it overlaps the rest
of the suite (`recipe_run` in `tests/conftest.py`); these tests check what it recorded.
"""

import pytest

from rlhf_assets.compute.hardware import REACHES_OUTSIDE, STEP_HARDWARE, Hardware

pytestmark = pytest.mark.aws


def _step(job: dict) -> str:
    return job["Environment"]["RLHF_STEP"]


def _hardware(job: dict) -> Hardware:
    """What the job's asset needs: its step's declaration, but one GPU for the pretrained reward model (converted
    and scored, not trained)."""
    return Hardware.GPU if job["TrainingJobName"].startswith("rlhf-reward-model-") else STEP_HARDWARE[_step(job)]


def test_the_whole_recipe_graph_runs_on_snapshots_with_the_jobs_network_cut(recipe_run: dict) -> None:
    requests, codes, logs = recipe_run["requests"], recipe_run["exit_codes"], recipe_run["logs"]
    failed = [(_step(job), log) for job, code, log in zip(requests, codes, recipe_run["job_logs"], strict=True)
              if code != 0]
    assert len(codes) == len(requests), logs[-4000:]
    assert recipe_run["success"] and not failed, failed or logs[-4000:]
    assert {_step(job) for job in requests} == set(STEP_HARDWARE), "every step program ran as a SageMaker job"
    for job in requests:
        assert (job["Environment"].get("HF_HUB_OFFLINE") == "1") == (_step(job) not in REACHES_OUTSIDE), _step(job)
    reward = recipe_run["reward_metadata"]
    assert reward["mode"] == "pretrained" and reward["readout"].startswith("eos")
    assert "loading trlx reward model Dahoas/gptj-rm-static from" in logs


def test_only_gpu_work_starts_gpu_instances(recipe_run: dict) -> None:
    for job in recipe_run["requests"]:
        expected = {Hardware.CPU: "ml.m5.xlarge", Hardware.GPU: "ml.g6e.xlarge",
                    Hardware.TRAINING: "ml.p4d.24xlarge"}[_hardware(job)]
        assert job["ResourceConfig"]["InstanceType"] == expected, (job["TrainingJobName"], expected)


def test_the_recipes_zero2_launch_runs_on_two_ranks(recipe_run: dict) -> None:
    """accelerate launch with zero2_bf16.yaml on two CPU ranks: DeepSpeed's CPU accelerator over gloo, bf16."""
    training = [job for job in recipe_run["requests"] if _hardware(job) is Hardware.TRAINING]
    assert {_step(job) for job in training} == {"sft", "reward", "ppo", "dpo"}
    assert {job["Environment"]["RLHF_ACCELERATE_CONFIG"] for job in training} == {
        "rlhf_assets/compute/accelerate/zero2_bf16.yaml"}
    assert {job["Environment"]["RLHF_NUM_PROCESSES"] for job in training} == {"2"}
    # SFT, the judge, DPO (TRL's trainers) and PPO (ours) each log their launch.
    logs = recipe_run["logs"]
    assert logs.count("launch: DeepSpeed ZeRO-2, bf16, 2 ranks over gloo") == 4, logs[-3000:]
