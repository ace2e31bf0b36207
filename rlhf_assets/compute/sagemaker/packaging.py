"""What a SageMaker job runs: the training image for the job's region and the source tarball it executes.

The image is AWS's PyTorch training image (`pytorch:2.13.0-cu133-amzn2023-sagemaker`: torch 2.13.0, the same
release as the local and CI environment, Python 3.12, the `sagemaker-training` toolkit). Images live in a
per-region registry (SageMaker refuses cross-region pulls), so the URI is built for the job's region. The
tarball is the package plus `requirements.txt`: the packages the image lacks (`requirements/job.lock`, resolved
against the image's full package list `requirements/sagemaker-image.lock`), which the toolkit installs before the
entry point starts without replacing anything the image ships.
"""

from __future__ import annotations

import io
import tarfile

from rlhf_assets.contract import ENTRY_POINT
from rlhf_assets.specs import PROJECT_ROOT

IMAGE_REPOSITORY = "pytorch"
IMAGE_TAG = "2.13.0-cu133-amzn2023-sagemaker"
# AWS Deep Learning Containers registry account per region (the SageMaker Python SDK's image_uri_config map).
DLC_ACCOUNTS = {
    "af-south-1": "626614931356", "ap-east-1": "871362719292", "ap-east-2": "975050140332",
    "ap-northeast-1": "763104351884", "ap-northeast-2": "763104351884", "ap-northeast-3": "364406365360",
    "ap-south-1": "763104351884", "ap-south-2": "772153158452", "ap-southeast-1": "763104351884",
    "ap-southeast-2": "763104351884", "ap-southeast-3": "907027046896", "ap-southeast-4": "457447274322",
    "ap-southeast-5": "550225433462", "ap-southeast-6": "633930458069", "ap-southeast-7": "590183813437",
    "ca-central-1": "763104351884", "ca-west-1": "204538143572",
    "cn-north-1": "727897471807", "cn-northwest-1": "727897471807",
    "eu-central-1": "763104351884", "eu-central-2": "380420809688", "eu-north-1": "763104351884",
    "eu-south-1": "692866216735", "eu-south-2": "503227376785", "eu-west-1": "763104351884",
    "eu-west-2": "763104351884", "eu-west-3": "763104351884", "il-central-1": "780543022126",
    "me-central-1": "914824155844", "me-south-1": "217643126080", "mx-central-1": "637423239942",
    "sa-east-1": "763104351884", "us-east-1": "763104351884", "us-east-2": "763104351884",
    "us-gov-east-1": "446045086412", "us-gov-west-1": "442386744353",
    "us-west-1": "763104351884", "us-west-2": "763104351884",
}
REQUIREMENTS_DIR = PROJECT_ROOT / "requirements"
IMAGE_LOCK = "sagemaker-image.lock"  # the image's full package list
JOB_LOCK = "job.lock"  # exactly what the image lacks


class ImageNotInRegion(ValueError):
    """The default training image is not published in the requested region."""


def default_image_uri(region: str) -> str:
    """The training image in `region`'s own registry (SageMaker pulls only from the job's region)."""
    account = DLC_ACCOUNTS.get(region)
    if account is None:
        raise ImageNotInRegion(
            f"the AWS PyTorch training image is not published in region {region!r} (known: "
            f"{', '.join(sorted(DLC_ACCOUNTS))}); set the sagemaker resource's image_uri to an image in that region")
    domain = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"{account}.dkr.ecr.{region}.{domain}/{IMAGE_REPOSITORY}:{IMAGE_TAG}"


def job_requirements() -> bytes:
    """`requirements.txt` for the toolkit: only the packages the image lacks, each pinned. Their requirements are
    met by each other and by the image as it is (tests/process/test_job_environment.py), so pip installs these
    and touches nothing the image ships."""
    return (REQUIREMENTS_DIR / JOB_LOCK).read_bytes()


def source_tarball(*, with_requirements: bool = True) -> bytes:
    """The step programs as SageMaker's `sagemaker_submit_directory`: the package, the entry point, requirements.

    Without `with_requirements` (a derived image that already holds them, deploy/sagemaker/Dockerfile) the job
    installs nothing at start-up. Deterministic (sorted names, zero mtimes), so unchanged code is uploaded once
    and keyed by its hash.
    """
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=6) as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))

        package = PROJECT_ROOT / "rlhf_assets"
        for path in sorted(p for p in package.rglob("*") if p.is_file() and p.suffix in (".py", ".yaml")):
            add(str(path.relative_to(PROJECT_ROOT)), path.read_bytes())
        add(ENTRY_POINT, (package / "compute" / "sagemaker" / "entry.py").read_bytes())
        if with_requirements:
            add("requirements.txt", job_requirements())
    return buffer.getvalue()
