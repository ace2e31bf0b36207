"""Code versions follow the code an asset runs: edits elsewhere reuse results, edits to its modules do not."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rlhf_assets.code_versions import PACKAGE_DIR, code_fingerprint, module_closure, step_code_version
from rlhf_assets.presets import PROJECT_ROOT
from tests.conftest import all_assets

pytestmark = pytest.mark.unit

STEPS = ("base_model", "sft", "reward", "ppo", "dpo", "toxicity_model", "sft_responses", "eval_responses",
         "sft_toxicity", "toxicity_scores", "auto_preference", "overoptimisation")


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "rlhf_assets"
    shutil.copytree(PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def test_editing_the_cli_or_the_stores_reuses_ppo_and_editing_its_losses_does_not(package_copy: Path) -> None:
    before = {step: code_fingerprint(f"rlhf_assets.steps.{step}", package_copy) for step in STEPS}
    _append(package_copy / "cli.py", "\n# an edit to the command line only\n")
    _append(package_copy / "labeling" / "app.py", "\n# an edit to the labeling app only\n")
    assert {step: code_fingerprint(f"rlhf_assets.steps.{step}", package_copy) for step in STEPS} == before

    _append(package_copy / "ppo" / "losses.py", "\n# an edit to PPO's losses\n")
    after = {step: code_fingerprint(f"rlhf_assets.steps.{step}", package_copy) for step in STEPS}
    assert after["ppo"] != before["ppo"]
    assert {s for s in STEPS if after[s] != before[s]} == {"ppo"}, "only the step that runs ppo/losses.py changes"

    _append(package_copy / "storage.py", "\n# an edit to how artifacts are uploaded to S3\n")
    assert {step: code_fingerprint(f"rlhf_assets.steps.{step}", package_copy) for step in STEPS} == after, \
        "steps describe and verify files (artifact_files.py); the stores are not code they run"
    _append(package_copy / "artifact_files.py", "\n# an edit to how a step hashes its files\n")
    assert all(code_fingerprint(f"rlhf_assets.steps.{step}", package_copy) != after[step] for step in STEPS)
    after = {step: code_fingerprint(f"rlhf_assets.steps.{step}", package_copy) for step in STEPS}

    _append(package_copy / "compute" / "accelerate" / "zero2_bf16.yaml", "\n# a changed launch config\n")
    assert code_fingerprint("rlhf_assets.steps.ppo", package_copy) != after["ppo"], "package data files count"


def test_a_domains_checks_automation_and_settings_are_not_its_assets_code(package_copy: Path) -> None:
    """A check's description, a sensor's interval or a deployment setting does not change what an asset computes:
    editing them must not mark every asset of the domain stale (each domain's `definitions.py` holds them apart
    from its package's `__init__`, which every asset module runs)."""
    modules = ["rlhf_assets." + ".".join(path.relative_to(package_copy).with_suffix("").parts)
               for path in sorted((package_copy / "defs").rglob("*.py"))
               if path.stem not in ("__init__", "definitions", "checks", "automation", "policy_suite")]
    before = {module: code_fingerprint(module, package_copy) for module in modules}
    for edited in [*(package_copy / "defs").rglob("checks.py"), *(package_copy / "defs").rglob("automation.py"),
                   *(package_copy / "defs").rglob("definitions.py"), package_copy / "settings.py"]:
        _append(edited, "\n# an edit to a check, a sensor or a setting\n")
    assert {module: code_fingerprint(module, package_copy) for module in modules} == before


def test_guidelines_change_the_human_eval_assets_not_the_models(package_copy: Path) -> None:
    tasks = code_fingerprint("rlhf_assets.defs.human_eval.assets", package_copy)
    sft = code_fingerprint("rlhf_assets.steps.sft", package_copy)
    _append(package_copy / "labeling" / "guidelines.md", "\nA new worked example.\n")
    assert code_fingerprint("rlhf_assets.defs.human_eval.assets", package_copy) != tasks
    assert code_fingerprint("rlhf_assets.steps.sft", package_copy) == sft


@pytest.mark.parametrize("step", STEPS)
def test_the_closure_holds_every_module_the_step_really_imports(step: str) -> None:
    """Import the step where none of this package is loaded yet (a child of the warm worker, which forgets the
    package after preloading libraries): every rlhf_assets module it loads must be in the static closure."""
    command = [sys.executable, "-m", "rlhf_assets.compute.warm.client", "tests.import_probe",
               f"rlhf_assets.steps.{step}"]
    done = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "warm worker unavailable" not in done.stderr, done.stderr[-2000:]
    loaded = json.loads(done.stdout)
    assert f"rlhf_assets/steps/{step}.py" in " ".join(loaded)
    closure = {str(p) for p in module_closure(f"rlhf_assets.steps.{step}")}
    missing = {str(Path(f).resolve()) for f in loaded} - closure
    assert not missing, f"imported but not fingerprinted: {missing}"


def test_every_asset_has_the_code_version_of_what_computes_it() -> None:
    versions = {key.to_user_string(): a.code_versions_by_key[key] for a in all_assets for key in a.keys}
    assert versions["ppo_policy"] == step_code_version("ppo")
    assert versions["reward_model"] == versions["judge_model"] == step_code_version("reward")
    assert versions["sft_model"] != versions["ppo_policy"] != versions["dpo_policy"]
    assert all(v and len(v) == 16 for v in versions.values()), versions


def test_a_preset_value_is_configuration_and_its_schema_is_code(package_copy: Path) -> None:
    """Editing a `gptj_6b` value leaves every asset module's and step's code version unchanged (the values reach a
    step in its request, which result reuse hashes); editing a schema's default changes the steps that read it."""
    modules = [f"rlhf_assets.steps.{step}" for step in STEPS] + [
        "rlhf_assets." + ".".join(path.relative_to(package_copy).with_suffix("").parts)
        for path in sorted((package_copy / "defs").rglob("*.py")) if path.stem != "__init__"]
    before = {module: code_fingerprint(module, package_copy) for module in modules}
    presets = package_copy / "presets.py"
    edited = presets.read_text().replace("ppo=PPOSpec(config=PPOConfig(), kl_bound=20.0, reward_batch_size=8)",
                                         "ppo=PPOSpec(config=PPOConfig(), kl_bound=25.0, reward_batch_size=8)")
    assert edited != presets.read_text(), "the gptj_6b value to edit is still in presets.py"
    presets.write_text(edited)
    assert {module: code_fingerprint(module, package_copy) for module in modules} == before

    specs = package_copy / "specs.py"
    _append(specs, "\n# an edit to the schemas\n")
    after = {module: code_fingerprint(module, package_copy) for module in modules}
    assert after["rlhf_assets.steps.ppo"] != before["rlhf_assets.steps.ppo"]
