"""The SageMaker job's Python environment is determined by files in this repo and is the one the tests run.

The job installs `requirements/job.lock` on top of the training image, constrained by the image's own pins
(`requirements/sagemaker-image.txt`). Here pip resolves that install for the image's platform (Python 3.12,
manylinux x86_64) in an environment that already holds the image's packages, exactly as the toolkit's
`pip install -r requirements.txt` would inside the image; and the local environment (the tests', installed from
`requirements/dev.lock`) is checked to carry the same versions, with transformers seeing torch.
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

from rlhf_assets.compute.sagemaker.packaging import IMAGE_PINS, JOB_LOCK, REQUIREMENTS_DIR, source_tarball

pytestmark = pytest.mark.process

PLATFORMS = ("manylinux_2_34_x86_64", "manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


def _pins(name: str) -> dict[str, str]:
    lines = (line.split("#", 1)[0].strip() for line in (REQUIREMENTS_DIR / name).read_text().splitlines())
    requirements = [Requirement(line) for line in lines if line and not line.startswith("-")]
    return {canonicalize_name(r.name): str(r.specifier).removeprefix("==") for r in requirements}


def _image_environment(root: Path) -> Path:
    """A Python environment whose installed packages are the image's pinned ones (metadata only)."""
    venv.create(root, with_pip=False)
    site = next((root / "lib").glob("python3*/site-packages"))
    for name, version in _pins(IMAGE_PINS).items():
        info = site / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        (info / "INSTALLER").write_text("image\n")
        (info / "RECORD").write_text("")
    return root / "bin" / "python"


def test_job_requirements_resolve_in_the_image_without_replacing_its_packages(tmp_path: Path) -> None:
    python = _image_environment(tmp_path / "image")
    report = tmp_path / "report.json"
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--dry-run", "--quiet", "--report",
         str(report), "--python-version", "3.12", *platforms, "--only-binary=:all:",
         "-r", str(REQUIREMENTS_DIR / JOB_LOCK), "-c", str(REQUIREMENTS_DIR / IMAGE_PINS)],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    resolved = {canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"]
                for item in json.loads(report.read_text())["install"]}
    assert not set(resolved) & set(_pins(IMAGE_PINS)), "the install would replace packages of the image"
    assert resolved == _pins(JOB_LOCK), "the image install must take exactly the locked versions"


def test_the_local_environment_runs_the_jobs_versions() -> None:
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    for name, version in _pins(JOB_LOCK).items():
        assert installed.get(name) == version, f"{name}: tests run {installed.get(name)}, the job installs {version}"
    image = _pins(IMAGE_PINS)
    assert Version(installed["torch"]).base_version == image["torch"] and installed["numpy"] == image["numpy"]


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
    assert Version(_pins(IMAGE_PINS)["deepspeed"]) in deepspeed_spec.specifier  # the image's deepspeed
    assert Version(_pins(JOB_LOCK)["accelerate"]) in accelerate_spec.specifier
    for package in ("trl", "detoxify", "peft"):
        for text in metadata.requires(package) or []:
            requirement = Requirement(text)
            name = canonicalize_name(requirement.name)
            if requirement.marker is None and name in ("torch", "transformers", "accelerate"):
                version = _pins(IMAGE_PINS).get(name) or _pins(JOB_LOCK)[name]
                assert Version(version) in requirement.specifier, f"{package} needs {text}, the job has {version}"


def test_the_source_tarball_installs_the_lock_under_the_image_constraints() -> None:
    with tarfile.open(fileobj=io.BytesIO(source_tarball()), mode="r:gz") as tar:
        requirements = tar.extractfile("requirements.txt").read().decode()
        pins = tar.extractfile(IMAGE_PINS).read().decode()
        names = tar.getnames()
    assert requirements.splitlines()[0] == f"-c {IMAGE_PINS}"
    assert requirements.endswith((REQUIREMENTS_DIR / JOB_LOCK).read_text()) and "torch==2.13.0" in pins
    assert "rlhf_entry.py" in names and "setup.py" not in names  # a setup.py would make the toolkit pip-install it
