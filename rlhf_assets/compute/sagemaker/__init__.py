"""SageMaker training jobs as a compute backend: the Pipes client, its log and message readers, the job's image
and source tarball, prices, and the backend resource that puts them together."""

from rlhf_assets.compute.sagemaker.backend import SageMakerComputeBackend
from rlhf_assets.compute.sagemaker.client import PipesSageMakerClient

__all__ = ["PipesSageMakerClient", "SageMakerComputeBackend"]
