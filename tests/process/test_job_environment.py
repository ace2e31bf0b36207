"""The SageMaker job's Python environment is determined by files in this repo and is the one the tests run.

The image's full package list is vendored (`requirements/sagemaker-image.lock`); the job installs only what it
lacks (`requirements/job.lock`). Here pip resolves that install for the image's platform (Python 3.12, manylinux
x86_64) in an environment that holds every one of the image's packages, exactly as the toolkit's
`pip install -r requirements.txt` would inside the image: nothing the image ships may be replaced, and pip check's
rule (every requirement of every installed distribution met) must hold for what gets added. The local environment
(the tests', from `requirements/dev.lock`) carries the same versions of what the job adds.
"""

import importlib.metadata as metadata
import io
import json
import subprocess
import sys
import tarfile
import venv
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from rlhf_assets.compute.sagemaker.packaging import (
    IMAGE_LOCK,
    IMAGE_TAG,
    JOB_LOCK,
    REQUIREMENTS_DIR,
    job_requirements,
    source_tarball,
)

pytestmark = pytest.mark.process

PLATFORMS = ("manylinux_2_34_x86_64", "manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


def _pins(name: str) -> dict[str, str]:
    lines = (line.split("#", 1)[0].strip() for line in (REQUIREMENTS_DIR / name).read_text().splitlines())
    requirements = [Requirement(line) for line in lines if line and not line.startswith("-")]
    return {canonicalize_name(r.name): str(r.specifier).removeprefix("==") for r in requirements}


def _image_environment(root: Path) -> Path:
    """A Python environment whose installed packages are all of the image's (metadata only)."""
    venv.create(root, with_pip=False)
    site = next((root / "lib").glob("python3*/site-packages"))
    for name, version in _pins(IMAGE_LOCK).items():
        info = site / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        (info / "INSTALLER").write_text("image\n")
        (info / "RECORD").write_text("")
    return root / "bin" / "python"


def pip_check(installed: dict[str, str], requires: dict[str, list[str]]) -> list[str]:
    """pip check's rule over `installed` (name -> version): each listed requirement, its marker evaluated for the
    image's platform without extras, names an installed distribution whose version it accepts."""
    broken = []
    for name, texts in requires.items():
        for text in texts:
            requirement = Requirement(text)
            if requirement.marker is not None and not requirement.marker.evaluate({**JOB_PLATFORM, "extra": ""}):
                continue
            have = installed.get(canonicalize_name(requirement.name))
            if have is None or not requirement.specifier.contains(have, prereleases=True):
                broken.append(f"{name} requires {text}, the image + job have {have}")
    return broken


JOB_PLATFORM = {"python_version": "3.12", "python_full_version": "3.12.9", "sys_platform": "linux",
                "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
                "implementation_name": "cpython", "platform_python_implementation": "CPython"}


# Image packages pip cannot read metadata of for another platform: built from source in the image (no wheel), or
# from the PyTorch index (+cu130 builds, whose requirements differ from PyPI's). Their requirements go unchecked.
UNREADABLE = ("deepspeed", "sagemaker-training", "sagemaker-pytorch-training", "antlr4-python3-runtime",
              "inotify-simple", "flash-attn", "torch", "torchvision", "torchaudio", "triton", "transformer-engine")


def _dry_run(python: Path, report: Path, *args: str) -> list[dict]:
    """pip's resolution for the image's platform, as a list of report items (name, version, requirements)."""
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--dry-run", "--quiet", "--report",
         str(report), "--python-version", "3.12", *platforms, "--only-binary=:all:", *args],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(report.read_text())["install"]


def _requirements(items: list[dict]) -> dict[str, list[str]]:
    return {canonicalize_name(item["metadata"]["name"]): item["metadata"].get("requires_dist", []) for item in items}


def test_job_requirements_resolve_in_the_image_without_replacing_or_breaking_anything(tmp_path: Path) -> None:
    python = _image_environment(tmp_path / "image")
    items = _dry_run(python, tmp_path / "job.json", "-r", str(REQUIREMENTS_DIR / JOB_LOCK))
    resolved = {canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"] for item in items}
    image = _pins(IMAGE_LOCK)
    assert not set(resolved) & set(image), f"the install would replace the image's {sorted(set(resolved) & set(image))}"
    assert resolved == _pins(JOB_LOCK), "the image install must take exactly the locked versions"
    readable = tmp_path / "image.txt"
    readable.write_text("".join(f"{name}=={version}\n" for name, version in image.items()
                                if not name.startswith(UNREADABLE) and not name.startswith("nvidia-")))
    image_requires = _requirements(_dry_run(python, tmp_path / "image.json", "--no-deps", "--ignore-installed",
                                            "-r", str(readable)))
    before = set(pip_check(image, image_requires))
    after = set(pip_check({**image, **resolved}, {**image_requires, **_requirements(items)}))
    assert after - before == set(), "the job breaks requirements the image met"
    assert after <= before, "pip check's rule over the image with the job's packages"


def test_pip_checks_rule_finds_a_broken_requirement() -> None:
    """The check above can fail: a requirement the image's version does not meet is reported by name."""
    assert pip_check({"s3fs": "2026.2.0", "fsspec": "2026.2.0"}, {"s3fs": ["fsspec==2026.3.0"]}) == [
        "s3fs requires fsspec==2026.3.0, the image + job have 2026.2.0"]
    assert pip_check({"a": "1"}, {"a": ["b>=1; python_version < '3.10'", "c; extra == 'x'"]}) == []


def test_the_local_environment_runs_the_jobs_versions() -> None:
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    for name, version in _pins(JOB_LOCK).items():
        assert installed.get(name) == version, f"{name}: tests run {installed.get(name)}, the job installs {version}"
    image = _pins(IMAGE_LOCK)
    assert Version(installed["torch"]).base_version == image["torch"]
    assert installed["deepspeed"] == image["deepspeed"], "the recipe's ZeRO-2 launch runs the image's DeepSpeed"


def test_the_resolved_set_imports_together_and_transformers_sees_torch() -> None:
    check = """
import accelerate, datasets, detoxify, peft, transformers, trl, dagster_pipes
from transformers.dependency_versions_table import deps
from transformers.utils import is_torch_available
assert is_torch_available(), "transformers switched PyTorch off"
print(deps["deepspeed"], deps["accelerate"])
"""
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    deepspeed_spec, accelerate_spec = (Requirement(text) for text in done.stdout.split())
    assert Version(_pins(IMAGE_LOCK)["deepspeed"]) in deepspeed_spec.specifier  # the image's deepspeed
    assert Version(_pins(JOB_LOCK)["accelerate"]) in accelerate_spec.specifier
    for package in ("trl", "detoxify", "peft"):
        for text in metadata.requires(package) or []:
            requirement = Requirement(text)
            name = canonicalize_name(requirement.name)
            if requirement.marker is None and name in ("torch", "transformers", "accelerate"):
                version = _pins(IMAGE_LOCK).get(name) or _pins(JOB_LOCK)[name]
                assert Version(version) in requirement.specifier, f"{package} needs {text}, the job has {version}"


def test_the_source_tarball_installs_only_what_the_image_lacks() -> None:
    with tarfile.open(fileobj=io.BytesIO(source_tarball()), mode="r:gz") as tar:
        requirements = tar.extractfile("requirements.txt").read().decode()
        names = tar.getnames()
    assert requirements == (REQUIREMENTS_DIR / JOB_LOCK).read_text() == job_requirements().decode()
    assert "rlhf_entry.py" in names and "setup.py" not in names  # a setup.py would make the toolkit pip-install it
    with tarfile.open(fileobj=io.BytesIO(source_tarball(with_requirements=False)), mode="r:gz") as tar:
        assert "requirements.txt" not in tar.getnames(), "a derived image installs nothing at start-up"


def test_the_derived_image_builds_on_the_training_image_with_the_job_lock() -> None:
    dockerfile = (REQUIREMENTS_DIR.parent / "deploy" / "sagemaker" / "Dockerfile").read_text()
    assert f"pytorch:{IMAGE_TAG}" in dockerfile and f"requirements/{JOB_LOCK}" in dockerfile
    assert "pip check" in dockerfile
