"""No code from data (issue 15, item 2): a PPO checkpoint whose pickled parts carry a `__reduce__` payload is
refused on resume and the payload never runs (accelerate loads them with `weights_only=True`). A tampered file
alone is already skipped by the completeness marker; these tests rewrite the marker, as an attacker could."""

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlhf_assets.checkpoint_integrity import write_marker
from rlhf_assets.modeling.weights_only import FORCE_FULL_ENV, FORCE_WEIGHTS_ONLY_ENV, weights_only_loads
from rlhf_assets.ppo.config import PPOConfig
from rlhf_assets.ppo.trainer import PPOTrainer
from rlhf_assets.ppo.value_head import CausalLMWithValueHead
from tests.ppo_toys import CharTokenizer, tiny_neox
from tests.unit.test_detoxify_format import _Payload

pytestmark = pytest.mark.unit

PROMPTS = [[5, 6, 7], [8, 9], [10, 11, 12], [13]]


def _trainer(checkpoints: Path, total_steps: int) -> PPOTrainer:
    config = PPOConfig(seq_length=16, max_new_tokens=4, batch_size=2, num_rollouts=4, chunk_size=4, ppo_epochs=1,
                       total_steps=total_steps, num_layers_unfrozen=-1, stop_sequences=(), checkpoint_interval=2)

    def reward(indices: list[int], texts: list[str]) -> torch.Tensor:
        return torch.tensor([float(len(t)) for t in texts])

    return PPOTrainer(config, CausalLMWithValueHead(tiny_neox()), tiny_neox(), CharTokenizer(), PROMPTS, reward,
                      checkpoints, log=lambda _: None)


@pytest.mark.parametrize("part", ["random_states_0.pkl", "optimizer.bin"])
def test_a_poisoned_ppo_checkpoint_is_refused_before_its_payload_runs(tmp_path: Path, part: str) -> None:
    _trainer(tmp_path / "ckpt", total_steps=2).train()
    saved = next((tmp_path / "ckpt").glob("step-*"))
    marker = tmp_path / "code-ran"
    with (saved / part).open("wb") as handle:
        pickle.dump({"state": _Payload(marker)}, handle)
    write_marker(saved)  # whoever can write the checkpoint can rewrite its completeness marker too
    if part == "optimizer.bin":
        with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
            _trainer(tmp_path / "ckpt", total_steps=4).train()
    else:  # accelerate refuses the RNG states the same way, logs it and resumes without them
        assert _trainer(tmp_path / "ckpt", total_steps=4).train().resumed_from == 2
    assert not marker.exists(), "the planted payload ran"


STEP_READING_IN_FULL = """
import sys
import torch
from rlhf_assets.steps.runtime import run_step

def main(runtime):
    torch.load(sys.argv[1], weights_only=False)  # as DeepSpeed's universal-checkpoint reader asks

run_step(main, ["--request", sys.argv[2]])
"""


@pytest.mark.parametrize("inherited", [{}, {FORCE_FULL_ENV: "1"}], ids=["plain", "full-unpickling-requested"])
def test_a_step_process_never_unpickles_in_full_even_when_a_library_asks_to(tmp_path: Path,
                                                                             inherited: dict[str, str]) -> None:
    """A reader nobody routed through the restricted unpickler, asking torch for the full one explicitly, still
    gets the weights-only unpickler in a step process: the payload is refused and never runs, also when the
    environment the step inherits asks torch for the full unpickler."""
    marker, payload = tmp_path / "payload-ran", tmp_path / "optim_states.pt"
    torch.save({"state": _Payload(marker)}, payload)
    (tmp_path / "request.json").write_text("{}")
    (tmp_path / "step.py").write_text(STEP_READING_IN_FULL)
    done = subprocess.run([sys.executable, str(tmp_path / "step.py"), str(payload), str(tmp_path / "request.json")],
                          capture_output=True, text=True, timeout=120, env={**os.environ, **inherited})
    assert done.returncode == 1 and "UnpicklingError" in done.stderr, done.stderr[-2000:]
    assert not marker.exists(), "the pickled payload ran"
    assert (f"ignored {FORCE_FULL_ENV}=1" in done.stderr) == bool(inherited), done.stderr[-2000:]
    torch.load(payload, weights_only=False)  # outside a step the same call runs it: the test's payload is real
    assert marker.exists()


def test_a_library_asking_for_the_full_unpickler_gets_the_weights_only_one_in_any_process(tmp_path: Path) -> None:
    """`weights_only_loads` (around Detoxify's loading) refuses a payload the full unpickler would run, whatever
    the environment asked, and puts the environment back as it was."""
    marker, payload = tmp_path / "payload-ran", tmp_path / "detoxify.ckpt"
    torch.save({"config": _Payload(marker)}, payload)
    before = {name: os.environ.get(name) for name in (FORCE_WEIGHTS_ONLY_ENV, FORCE_FULL_ENV)}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(FORCE_FULL_ENV, "1")
        with weights_only_loads(), pytest.raises(pickle.UnpicklingError):
            torch.load(payload, weights_only=False)
        assert os.environ.get(FORCE_FULL_ENV) == "1" and FORCE_WEIGHTS_ONLY_ENV not in os.environ
    assert {name: os.environ.get(name) for name in before} == before
    assert not marker.exists(), "the pickled payload ran"
