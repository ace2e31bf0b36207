"""What an enterprise AWS account requires of every training job: its VPC, keys, tags and network isolation.

Typed here and checked before any job exists, against the limits in botocore's SageMaker model (subnet and
security-group IDs and counts, tag keys and values, `MaxPendingTimeInSeconds` between 1,800 s and 28 days) and
against what SageMaker accepts for the instance: instances whose storage is local NVMe (p4d, p5, g5, …) encrypt it
with a hardware key and take no `VolumeKmsKeyId`.
"""

from __future__ import annotations

import re
from typing import Any

from dagster import Config
from pydantic import Field

# SageMaker's documentation of ResourceConfig.VolumeKmsKeyId: "Certain Nitro-based instances include local storage,
# dependent on the instance type. Local storage volumes are encrypted using a hardware module on the instance. You
# can't request a VolumeKmsKeyId when using an instance type with local storage." AWS names no list; the SageMaker
# Python SDK's rule (`utils.volume_size_supported`) is "a 'd' in the family, or g5" (p3dn, p4d, p4de, g4dn, g5,
# m5d, c5d, r5d); p5, g6, g6e and trn1/trn2 carry EC2 instance-store NVMe volumes too.
LOCAL_NVME_FAMILIES = ("ml.p3dn", "ml.p4d", "ml.p4de", "ml.p5", "ml.p5e", "ml.p5en", "ml.g4dn", "ml.g5", "ml.g6",
                       "ml.g6e", "ml.m5d", "ml.c5d", "ml.r5d", "ml.trn1", "ml.trn1n", "ml.trn2")
ID_PATTERN = re.compile(r"[-0-9a-zA-Z]{1,32}")  # botocore: SubnetId / SecurityGroupId
KMS_PATTERN = re.compile(r"[a-zA-Z0-9:/_-]{1,2048}")  # botocore: KmsKeyId
TAG_PATTERN = re.compile(r"[\w\s.:/=+\-@]*")  # botocore's [\p{L}\p{Z}\p{N}_.:/=+\-@]*
OWN_TAGS = 13  # ours (jobs.JobIdentity.tags: 4) and Dagster's run information (up to 9)


def local_nvme(instance_type: str) -> bool:
    """Whether `instance_type`'s storage is instance-local NVMe (no EBS volume for a KMS key to encrypt)."""
    return instance_type.rsplit(".", 1)[0] in LOCAL_NVME_FAMILIES


class AccountSettings(Config):
    """Settings every job of the account must carry; all empty by default (a plain account needs none)."""

    subnets: list[str] = Field(default_factory=list, description="VPC subnets of the jobs (1-16, with security "
                               "groups); the VPC needs S3, ECR, CloudWatch Logs and STS endpoints "
                               "(docs/operations/deploying.md)")
    security_group_ids: list[str] = Field(default_factory=list, description="Security groups (1-5, with subnets)")
    network_isolation: bool = Field(False, description="EnableNetworkIsolation: the container reaches nothing, "
                                    "AWS services included (code, Pipes context and messages then travel through "
                                    "channels and the synced checkpoint directory); needs install_requirements="
                                    "false (a derived image). The two steps that stage hub sources run without it")
    encrypt_inter_container_traffic: bool = Field(False, description="EnableInterContainerTrafficEncryption "
                                                  "(multi-instance jobs; slower collective communication)")
    output_kms_key_id: str | None = Field(None, description="KMS key for the job's model output on S3")
    volume_kms_key_id: str | None = Field(None, description="KMS key for the instances' EBS volumes; refused "
                                          "for instance types with local NVMe storage")
    tags: dict[str, str] = Field(default_factory=dict, description="Tags on every job (cost centre, owner, ...)")
    max_pending_seconds: int | None = Field(None, description="StoppingCondition.MaxPendingTimeInSeconds: give "
                                            "up when capacity is not found within this (1800-2419200)")

    def problem(self, instance_type: str, *, install_requirements: bool) -> str | None:
        """Why a job on `instance_type` with these settings would be refused (by SageMaker, or by us because it
        could not work), or None."""
        if bool(self.subnets) != bool(self.security_group_ids):
            return "a VPC needs both subnets and security_group_ids (SageMaker's VpcConfig takes both or neither)"
        if self.subnets and not (1 <= len(self.subnets) <= 16 and 1 <= len(self.security_group_ids) <= 5):
            return (f"{len(self.subnets)} subnets and {len(self.security_group_ids)} security groups: SageMaker "
                    "takes 1-16 subnets and 1-5 security groups")
        for value in [*self.subnets, *self.security_group_ids]:
            if not ID_PATTERN.fullmatch(value):
                return f"{value!r} is not a subnet or security group ID (pattern [-0-9a-zA-Z], at most 32)"
        for name in ("output_kms_key_id", "volume_kms_key_id"):
            key = getattr(self, name)
            if key is not None and not KMS_PATTERN.fullmatch(key):
                return f"{name} {key!r} is not a KMS key ID, ARN or alias"
        if self.volume_kms_key_id and local_nvme(instance_type):
            return (f"volume_kms_key_id cannot be used with {instance_type}: its storage is local NVMe, encrypted "
                    "by a hardware module on the instance, and SageMaker refuses a VolumeKmsKeyId for such "
                    "instance types; unset it (the volume is encrypted anyway) or choose an EBS-backed type")
        if self.network_isolation and install_requirements:
            return ("network_isolation cuts the container off from any package index: build the derived image "
                    "(deploy/sagemaker/Dockerfile), set image_uri to it and install_requirements to false")
        if len(self.tags) + OWN_TAGS > 50:
            return f"{len(self.tags)} tags: SageMaker takes 50 per job and {OWN_TAGS} are ours"
        for key, value in self.tags.items():
            if key.lower().startswith(("aws:", "rlhf-assets:", "dagster")):
                return f"tag {key!r}: the aws:, rlhf-assets: and dagster prefixes are reserved (AWS, job ownership)"
            if not (1 <= len(key) <= 128 and len(value) <= 256 and TAG_PATTERN.fullmatch(key)
                    and TAG_PATTERN.fullmatch(value)):
                return f"tag {key!r}={value!r} is not a valid SageMaker tag (key 1-128, value 0-256 characters)"
        if self.max_pending_seconds is not None and not 1800 <= self.max_pending_seconds <= 2419200:
            return f"max_pending_seconds {self.max_pending_seconds}: SageMaker takes 1800 to 2419200"
        return None

    def job_tags(self) -> list[dict[str, str]]:
        return [{"Key": key, "Value": value} for key, value in sorted(self.tags.items())]

    def apply(self, params: dict[str, Any], *, isolated: bool) -> None:
        """Add these settings to `create_training_job` arguments (`isolated`: this job runs network-isolated)."""
        if self.subnets:
            params["VpcConfig"] = {"Subnets": list(self.subnets), "SecurityGroupIds": list(self.security_group_ids)}
        if isolated:
            params["EnableNetworkIsolation"] = True
        if self.encrypt_inter_container_traffic:
            params["EnableInterContainerTrafficEncryption"] = True
        if self.output_kms_key_id:
            params["OutputDataConfig"]["KmsKeyId"] = self.output_kms_key_id
        if self.volume_kms_key_id:
            params["ResourceConfig"]["VolumeKmsKeyId"] = self.volume_kms_key_id
        if self.max_pending_seconds is not None:
            params["StoppingCondition"]["MaxPendingTimeInSeconds"] = self.max_pending_seconds
