"""Only GPU work on GPU instances: every asset that runs a step gets the machine that step declares."""

import pkgutil
from pathlib import Path

import pytest

import rlhf_assets.steps
from rlhf_assets.code_versions import step_code_version
from rlhf_assets.compute.backend import step_launch
from rlhf_assets.compute.hardware import STEP_HARDWARE, Hardware, is_gpu_instance, step_hardware
from rlhf_assets.presets import PRESETS
from tests.conftest import DEFINITIONS

pytestmark = pytest.mark.unit


def step_programs() -> set[str]:
    """Modules of `rlhf_assets.steps` that are step programs (they call `run_step`)."""
    folder = Path(rlhf_assets.steps.__path__[0])
    return {module.name for module in pkgutil.iter_modules([str(folder)])
            if "run_step(main)" in (folder / f"{module.name}.py").read_text()}


def test_every_step_program_declares_its_hardware() -> None:
    assert step_programs() == set(STEP_HARDWARE)
    with pytest.raises(KeyError, match="declares no hardware"):
        step_hardware("not_a_step")


def assets_by_step() -> dict[str, list[str]]:
    versions = {step_code_version(step): step for step in STEP_HARDWARE}
    found: dict[str, list[str]] = {}
    for spec in DEFINITIONS.resolve_asset_graph().asset_nodes:
        step = versions.get(spec.code_version)
        if step:
            found.setdefault(step, []).append(spec.key.to_user_string())
    return found


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_each_asset_runs_on_the_instance_its_step_needs(preset: str) -> None:
    chosen = PRESETS[preset]
    found = assets_by_step()
    assert {"base_model", "sft", "ppo", "auto_preference"} <= set(found)
    for step, assets in found.items():
        for asset in assets:
            request = step_launch(step, asset=asset, preset=chosen, inputs={}, wire={}, resume_key={})
            hardware = step_hardware(step)
            if chosen.compute.backend == "sagemaker" or chosen.compute.instance_type != "local":
                assert is_gpu_instance(request.instance_type) == (hardware is not Hardware.CPU), (asset, request)
            if hardware is not Hardware.TRAINING:
                assert request.num_processes == 1 and request.accelerate_config is None, asset
    base = step_launch("base_model", asset="base_model", preset=chosen, inputs={}, wire={}, resume_key={})
    assert not is_gpu_instance(base.instance_type), "base_model writes a tokenizer and a snapshot: no GPU"


def test_the_recipe_trains_on_its_p4d_and_samples_on_one_gpu() -> None:
    recipe = PRESETS["gptj_6b"]
    sft = step_launch("sft", asset="sft_model", preset=recipe, inputs={}, wire={}, resume_key={})
    assert (sft.instance_type, sft.num_processes, sft.accelerate_config) == (
        "ml.p4d.24xlarge", 8, "rlhf_assets/compute/accelerate/zero2_bf16.yaml")
    ppo = step_launch("ppo", asset="ppo_policy", preset=recipe, inputs={}, wire={}, resume_key={},
                       reserved_processes=1)
    assert ppo.num_processes == 7
    sampling = step_launch("eval_responses", asset="eval_responses", preset=recipe, inputs={}, wire={},
                            resume_key={})
    assert sampling.instance_type == "ml.g6e.xlarge" and sampling.num_processes == 1
