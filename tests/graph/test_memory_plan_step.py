"""The PPO step refuses a memory plan that cannot fit before it loads any weights (on the tiny graph's models)."""

import subprocess
from pathlib import Path

import pytest

from rlhf_assets.presets import TINY
from tests.conftest import manifest_of
from tests.graph.test_ppo_graph import _ppo_command

pytestmark = pytest.mark.graph


def test_ppo_step_refuses_an_impossible_plan_before_loading_weights(graph, tmp_path: Path) -> None:
    root, instance, _ = graph
    huge = TINY.ppo.config.model_copy(update={"seq_length": 200_000, "num_rollouts": 4096, "chunk_size": 4096})
    spec = TINY.ppo.model_copy(update={"config": huge}).model_dump()
    command, env = _ppo_command(tmp_path, graph, spec)
    env["SM_CURRENT_INSTANCE_TYPE"] = "ml.g5.xlarge"
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "memory plan refused: each training rank needs" in result.stderr
    assert "over the 22.1 GiB of a GPU (ml.g5.xlarge, 22.1 GiB)" in result.stderr
    assert "KV cache (4096 × 200000 tokens)" in result.stderr
    assert "loading" not in result.stderr.lower() and "PPO on" not in result.stderr
    assert manifest_of(instance, root, "ppo_policy").uri, "the materialized policy is untouched"
