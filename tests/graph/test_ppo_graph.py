"""PPO on the tiny preset with the shared HH data: it must beat SFT on held-out prompts and resume after SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from dagster import AssetKey

from rlhf_assets.presets import TINY
from tests.conftest import artifact_dir, manifest_of

pytestmark = pytest.mark.graph


def test_ppo_beats_sft_on_held_out_prompts_within_the_kl_bound(graph) -> None:
    root, instance, _ = graph
    ppo = manifest_of(instance, root, "ppo_policy")
    assert ppo.counts["steps"] == TINY.ppo.config.total_steps
    assert ppo.counts["eval_prompts"] == 100
    assert ppo.metrics["eval_reward_gain_ci_low"] > 0, ppo.metrics
    assert ppo.metrics["eval_policy_reward_mean"] > ppo.metrics["eval_sft_reward_mean"]
    assert ppo.metrics["eval_kl_to_sft"] < TINY.ppo.kl_bound
    metadata = instance.get_latest_materialization_event(AssetKey("ppo_policy")).asset_materialization.metadata
    assert "data:image/png;base64" in metadata["reward_curve"].value
    assert "| step | kl_penalty | kl_nonnegative |" in metadata["kl_curve"].value
    assert metadata["final_kl_coef"].value > 0
    assert ppo.metrics["eval_reward_gain_lc_ci_low"] <= ppo.metrics["eval_reward_gain_lc"], "the gain at equal length"
    assert ppo.counts["snapshots"] == TINY.ppo.config.curve_points == 4


def test_the_overoptimisation_curve_scores_every_snapshot_by_proxy_and_judge(graph) -> None:
    """Issue 26 (5): SFT, the four snapshots and the final policy, each with its KL and both gains; the plot and
    the judge's peak are in the asset's metadata."""
    root, instance, _ = graph
    curve = manifest_of(instance, root, "ppo_policy/overoptimisation_curve")
    frame = pd.read_parquet(artifact_dir(instance, root, "ppo_policy/overoptimisation_curve") / "curve.parquet")
    assert frame["step"].tolist() == [0, 10, 19, 29, 38, TINY.ppo.config.total_steps]
    assert frame.loc[0, ["kl", "proxy_gain", "judge_gain"]].tolist() == [0.0, 0.0, 0.0], "SFT against itself"
    assert (frame["kl"] > 0).iloc[1:].all() and (frame["kl_ci_low"] <= frame["kl"]).all()
    assert curve.counts["points"] == 6 and curve.counts["judge_peak_step"] in frame["step"].tolist()
    metadata = instance.get_latest_materialization_event(AssetKey(["ppo_policy", "overoptimisation_curve"])) \
        .asset_materialization.metadata
    assert "data:image/png;base64" in metadata["plot"].value and "judge" in metadata["summary"].value


def _ppo_command(tmp: Path, graph: tuple, spec: dict) -> tuple[list[str], dict[str, str]]:
    """The PPO step by hand on the graph's models, launched as the local backend launches it (the warm worker's
    client: killing it kills the step)."""
    root, instance, _ = graph
    (tmp / "config.json").write_text(json.dumps({"ppo": spec}))
    channels = {"sft_model": "sft_model", "reward_model": "reward_model", "preference_dataset": "preference_dataset",
                "eval_prompts": "eval_prompts"}
    env = {**os.environ, "SM_MODEL_DIR": str(tmp / "model"), "RLHF_CHECKPOINT_DIR": str(tmp / "checkpoints"),
           "SM_OUTPUT_DATA_DIR": str(tmp / "output" / "data"),
           **{f"SM_CHANNEL_{k.upper()}": str(artifact_dir(instance, root, v)) for k, v in channels.items()}}
    (tmp / "model").mkdir(parents=True, exist_ok=True)
    return [sys.executable, "-m", "rlhf_assets.compute.warm.client", "rlhf_assets.steps.ppo", "--request",
            str(tmp / "config.json")], env


def test_sigkilled_run_resumes_from_its_checkpoint_and_ends_at_the_same_step(graph, tmp_path: Path) -> None:
    root, _, _ = graph
    config = TINY.ppo.config.model_copy(update={"total_steps": 16, "checkpoint_interval": 8})
    spec = TINY.ppo.model_copy(update={"config": config}).model_dump()
    command, env = _ppo_command(tmp_path, graph, spec)
    victim = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not list((tmp_path / "checkpoints").glob("step-*/_COMPLETE.algo-1.json")) and time.monotonic() < deadline:
        assert victim.poll() is None, "the run ended before its first checkpoint"
        time.sleep(0.2)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    states = [marker.with_name("trainer_state.json")
              for marker in (tmp_path / "checkpoints").glob("step-*/_COMPLETE.algo-1.json")]
    killed_at = max(json.loads(state.read_text())["step"] for state in states)  # the newest complete checkpoint
    assert 0 < killed_at < 16

    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert f"resumed from step-{killed_at:08d}" in finished.stderr
    report = json.loads(finished.stdout[finished.stdout.index("{"):])
    assert report["resumed_from_step"] == killed_at
    assert report["steps"] == 16
    state = json.loads(sorted((tmp_path / "checkpoints").glob("step-*"))[-1].joinpath("trainer_state.json").read_text())
    assert state["step"] == 16 and len(state["history"]) == 16
    assert state["kl_controller"]["value"] != TINY.ppo.config.init_kl_coef, "the KL coefficient carried on"


@pytest.mark.parametrize(("algorithm", "lora_rank"), [("rloo", 0), ("grpo", 0), ("ppo", 4)])
def test_alternatives_and_lora_run_behind_the_same_step(graph, tmp_path: Path, algorithm: str, lora_rank: int) -> None:
    root, _, _ = graph
    config = TINY.ppo.config.model_copy(update={"total_steps": 2, "checkpoint_interval": 2, "lora_rank": lora_rank})
    spec = TINY.ppo.model_copy(update={"algorithm": algorithm, "config": config}).model_dump()
    command, env = _ppo_command(tmp_path, graph, spec)
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert finished.returncode == 0, finished.stderr[-3000:]
    report = json.loads(finished.stdout[finished.stdout.index("{"):])
    assert report["algorithm"] == algorithm and report["steps"] == 2 and report["eval_prompts"] == 100
    assert (tmp_path / "model" / "model.safetensors").exists()


def test_prompts_over_budget_are_refused_before_any_model_loads_when_truncation_is_off(graph, tmp_path: Path) -> None:
    root, _, _ = graph
    config = TINY.ppo.config.model_copy(update={"truncate_prompts": False})
    command, env = _ppo_command(tmp_path, graph, TINY.ppo.model_copy(update={"config": config}).model_dump())
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 2
    assert "ppo.config.truncate_prompts is false and training prompt" in finished.stderr
    assert "over the prompt budget of 128" in (tmp_path / "output" / "failure").read_text()
