"""The container contract: the names a step program and every compute backend agree on.

A step program finds its inputs, writes its model, keeps its checkpoints and talks to Dagster only through the
names below; a backend (local emulation, SageMaker, a future Kubernetes one) provides them. Both `compute/` and
`steps/` import this module and nothing of each other. It imports nothing but the standard library.

The paths and `SM_*` variables are SageMaker's own (the `sagemaker-training` toolkit exports them in a training
container); the `RLHF_*` variables are ours, set in the job's `Environment`.
"""

from __future__ import annotations

from pathlib import Path

CONTAINER_ROOT = Path("/opt/ml")
CONTAINER_CHECKPOINT_DIR = CONTAINER_ROOT / "checkpoints"

MODEL_DIR_ENV = "SM_MODEL_DIR"
OUTPUT_DATA_DIR_ENV = "SM_OUTPUT_DATA_DIR"
HOSTS_ENV = "SM_HOSTS"
CURRENT_HOST_ENV = "SM_CURRENT_HOST"
NUM_GPUS_ENV = "SM_NUM_GPUS"
CHANNEL_ENV_PREFIX = "SM_CHANNEL_"

CHECKPOINT_ENV = "RLHF_CHECKPOINT_DIR"
STEP_ENV = "RLHF_STEP"
NUM_PROCESSES_ENV = "RLHF_NUM_PROCESSES"
ACCELERATE_CONFIG_ENV = "RLHF_ACCELERATE_CONFIG"
# Set by the local backend to the Unix time it launched the step: the step reports how long it took to start.
LAUNCHED_AT_ENV = "RLHF_STEP_LAUNCHED_AT"

# How the Pipes context and messages travel: local files (default), S3 (`s3`, set by the SageMaker backend), or,
# for a network-isolated job that may call nothing, S3 itself included (`synced`), through what SageMaker moves for
# it: the context as a file in an input channel, the messages as files in the checkpoint directory it uploads.
PIPES_TRANSPORT_ENV = "RLHF_PIPES_TRANSPORT"
PIPES_TRANSPORT_S3 = "s3"
PIPES_TRANSPORT_SYNCED = "synced"
PIPES_CONTEXT_CHANNEL = "rlhf_pipes_context"
PIPES_CONTEXT_FILE = "context.json"
# Under the checkpoint directory: `<SYNCED_MESSAGES_DIR>/<job name>/rank-<r>/<attempt>/<n>.json`.
SYNCED_MESSAGES_DIR = "pipes-messages"
# An isolated job cannot download its source tarball: it comes as this input channel.
SOURCE_CHANNEL = "rlhf_source"
# Each rank writes its Pipes messages under `<key_prefix>/<RANK_PREFIX><rank>/<attempt>/` (one attempt per
# container start), so ranks and spot restarts never share a chunk stream; the orchestrator's reader merges them
# and waits for every rank to close.
PIPES_RANK_PREFIX = "rank-"

# The Pipes custom message a step sends once its model directory is final: its content hash and file sizes,
# computed where the bytes are, so the orchestrator never reads them to publish the artifact.
OUTPUT_DESCRIPTION_MESSAGE = "rlhf_output"

ENTRY_POINT = "rlhf_entry.py"

# Set per input channel by a backend whose channels are downloads (SageMaker): the content hash the lineage
# records for that input. The step re-hashes the downloaded files against it before reading them.
INPUT_HASH_ENV_PREFIX = "RLHF_INPUT_HASH_"


def channel_env(name: str) -> str:
    """The variable holding input channel `name`'s directory (SageMaker upper-cases channel names)."""
    return f"{CHANNEL_ENV_PREFIX}{name.upper()}"


def input_hash_env(name: str) -> str:
    """The variable holding the recorded content hash of input channel `name` (see `INPUT_HASH_ENV_PREFIX`)."""
    return f"{INPUT_HASH_ENV_PREFIX}{name.upper()}"


def failure_file(output_data_dir: Path) -> Path:
    """Where a failing step writes its reason; SageMaker copies it into the job's `FailureReason`."""
    return output_data_dir.parent / "failure"
