"""What every step program shares: its config, its container paths, logging and metadata reporting.

Under Dagster Pipes the config arrives in the context extras and logs/metadata flow back to the Dagster run;
run by hand (`python -m rlhf_assets.steps.sft --request request.json`) the same program logs to stderr and prints its
metadata as JSON, so a step can be debugged without an orchestrator. Only `dagster_pipes` is imported here.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from threading import Event
from typing import TYPE_CHECKING, Any, TypeVar

from dagster_pipes import (
    PipesBlobStoreMessageWriter,
    PipesBlobStoreMessageWriterChannel,
    PipesContext,
    PipesContextData,
    PipesContextLoader,
    PipesEnvVarParamsLoader,
    PipesParams,
    PipesS3ContextLoader,
    PipesS3MessageWriter,
    PipesS3MessageWriterChannel,
    open_dagster_pipes,
)
from pydantic import ValidationError

from rlhf_assets.artifact_files import COMPLETE_MARKER, ArtifactIntegrityError, describe_directory, verify_directory
from rlhf_assets.checkpoint_integrity import current_host
from rlhf_assets.contract import (
    CHECKPOINT_ENV,
    CONTAINER_CHECKPOINT_DIR,
    CONTAINER_ROOT,
    LAUNCHED_AT_ENV,
    MODEL_DIR_ENV,
    OUTPUT_DATA_DIR_ENV,
    OUTPUT_DESCRIPTION_MESSAGE,
    PIPES_CONTEXT_CHANNEL,
    PIPES_CONTEXT_FILE,
    PIPES_RANK_PREFIX,
    PIPES_TRANSPORT_ENV,
    PIPES_TRANSPORT_S3,
    PIPES_TRANSPORT_SYNCED,
    channel_env,
    failure_file,
    input_hash_env,
)
from rlhf_assets.data.hub_sources import NotStagedError, staged_path
from rlhf_assets.data.sources import describe_source
from rlhf_assets.layouts import LayoutError, Table
from rlhf_assets.modeling.weights_only import FORCE_FULL_ENV, force_weights_only
from rlhf_assets.step_contracts.base import StepReport, StepRequest

if TYPE_CHECKING:
    import pandas as pd

EXIT_BAD_INPUT = 2
# glibc's mallopt parameters (malloc.h) and the value both are set to: see `keep_freed_memory`
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
RequestT = TypeVar("RequestT", bound=StepRequest)
ALLOCATOR_THRESHOLD_BYTES = 1 << 30


def process_rank() -> tuple[int, int]:
    """(global rank, world size) of this process under `accelerate launch` / torchrun; (0, 1) when alone."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


class PromptCloseChannel(PipesBlobStoreMessageWriterChannel):
    """A blob-store channel whose upload thread wakes as soon as the step closes its Pipes session.

    dagster-pipes' own loop sleeps a whole second between looks, so every job's last messages (its output
    description, its closing event) waited one to two seconds after the step had finished. This is the same loop
    (a chunk every `interval`, everything left uploaded at close, in order), waiting on the close instead."""

    def _upload_loop(self, is_session_closed: Event) -> None:
        last_upload = time.monotonic()
        while not (self._buffer.empty() and is_session_closed.is_set()):
            if is_session_closed.is_set() or time.monotonic() - last_upload > self._interval:
                payload = "\n".join(json.dumps(message) for message in self.flush_messages())
                if payload:
                    self.upload_messages_chunk(StringIO(payload), self._counter)
                    last_upload = time.monotonic()
                    self._counter += 1
            is_session_closed.wait(1.0)


class RankedS3Channel(PromptCloseChannel, PipesS3MessageWriterChannel):
    """dagster-pipes' S3 channel with the prompt close."""


class RankedS3MessageWriter(PipesS3MessageWriter):
    """The S3 Pipes writer with this rank's own key prefix, so ranks never overwrite each other's chunks.

    The orchestrator's `RankedS3MessageReader` reads `<key_prefix>/rank-<r>/<attempt>/<n>.json` for every rank.
    """

    def make_channel(self, params: PipesParams) -> RankedS3Channel:
        rank, _ = process_rank()
        # A spot restart runs the container again with the same environment: each start gets its own segment
        # (named by its start time, so the reader knows the newest), as chunk numbers restart at 1.
        return RankedS3Channel(client=self._client, bucket=params["bucket"], interval=self.interval,
                               key_prefix=f"{params['key_prefix']}/{PIPES_RANK_PREFIX}{rank}/{_attempt()}")


def _attempt() -> str:
    return f"attempt-{time.time_ns():020d}-{os.getpid()}"


class ChannelContextLoader(PipesContextLoader):
    """The Pipes context from a file SageMaker downloaded into an input channel (a network-isolated job)."""

    @contextmanager
    def load_context(self, params: PipesParams) -> Iterator[PipesContextData]:
        path = Path(os.environ[channel_env(PIPES_CONTEXT_CHANNEL)]) / PIPES_CONTEXT_FILE
        yield json.loads(path.read_text())


class SyncedFileMessageWriter(PipesBlobStoreMessageWriter):
    """For a network-isolated job: each rank writes its chunks as files under the checkpoint directory, laid out as
    `RankedS3MessageWriter` lays out keys; SageMaker uploads that directory to the checkpoint prefix with the
    execution role, and the orchestrator reads the chunks there with the same ranked reader."""

    def make_channel(self, params: PipesParams) -> SyncedFileChannel:
        rank, _ = process_rank()
        root = Path(os.environ.get(CHECKPOINT_ENV, str(CONTAINER_CHECKPOINT_DIR)))
        return SyncedFileChannel(root / params["synced_dir"] / f"{PIPES_RANK_PREFIX}{rank}" / _attempt(),
                                 interval=self.interval)


class SyncedFileChannel(PromptCloseChannel):
    """Writes chunk `n` as `<n>.json` whole (staged, then renamed), so a sync never uploads half a chunk."""

    def __init__(self, directory: Path, *, interval: float) -> None:
        super().__init__(interval=interval)
        self.directory = directory

    def upload_messages_chunk(self, payload: Any, index: int) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        staged = self.directory / f".{index}.json.partial"
        staged.write_text(payload.read(), encoding="utf-8")
        os.replace(staged, self.directory / f"{index}.json")


class StepInputError(ValueError):
    """Bad input the user must fix (a file, a field, a config value); the step exits with code 2."""


@dataclass
class StepRuntime:
    """A step's view of the world: its request, SageMaker-contract paths, and where logs and the report go."""

    sent: dict[str, Any]  # the request as it travelled; steps read it typed, through `request`
    pipes: PipesContext | None
    verified_channels: set[str] = field(default_factory=set)
    startup_seconds: float | None = None

    def request(self, contract: type[RequestT]) -> RequestT:
        """The request this step was sent, validated against its contract: a request the asset side did not build
        (an edited config file, another version of the code) is bad input, named field by field."""
        try:
            return contract.model_validate(self.sent)
        except ValidationError as error:
            raise StepInputError(f"the request does not match {contract.__name__}: {error}") from None

    def staged(self, channel: str, source: str) -> Path:
        """Where to read `source`: a local path as it is, a hub repository from the snapshot in `channel`
        (`hub_snapshots/<role>`); never the hub itself."""
        if describe_source(source) != "hub_dataset":
            return Path(source).expanduser()
        try:
            return staged_path(self.channel(channel), source)
        except NotStagedError as exc:
            raise StepInputError(str(exc)) from None

    def channel(self, name: str) -> Path:
        """An input channel's directory (`SM_CHANNEL_<NAME>`), failing clearly when it was not provided.

        Where the backend downloaded the channel (SageMaker), its files are re-hashed against the content hash
        the lineage records (`RLHF_INPUT_HASH_<NAME>`) before first use: an edited S3 object fails here,
        naming the file, instead of training on it.
        """
        value = os.environ.get(channel_env(name))
        if not value or not Path(value).is_dir():
            raise StepInputError(f"input channel {name!r} is missing ({channel_env(name)}={value!r})")
        expected = os.environ.get(input_hash_env(name))
        if expected and name not in self.verified_channels:
            if not (Path(value) / COMPLETE_MARKER).is_file():
                raise StepInputError(f"input channel {name!r} ({value}) has no {COMPLETE_MARKER} marker: "
                                     "it is not a published artifact")
            try:
                verify_directory(Path(value), f"input channel {name!r}", expected_hash=expected)
            except ArtifactIntegrityError as error:
                raise StepInputError(str(error)) from None
            self.verified_channels.add(name)
        return Path(value)

    @property
    def model_dir(self) -> Path:
        return Path(os.environ.get(MODEL_DIR_ENV, str(CONTAINER_ROOT / "model")))

    @property
    def checkpoint_dir(self) -> Path:
        return Path(os.environ.get(CHECKPOINT_ENV, str(CONTAINER_CHECKPOINT_DIR)))

    @property
    def is_main_process(self) -> bool:
        return process_rank()[0] == 0

    def log(self, message: str) -> None:
        """Send a progress line to the Dagster run (or stderr when run by hand)."""
        if not self.is_main_process:
            return
        if self.pipes is not None:
            self.pipes.log.info(message)
        else:
            print(message, file=sys.stderr, flush=True)

    def log_every_rank(self, message: str) -> None:
        """A line from every rank (e.g. where it runs, or why it failed), prefixed with the rank."""
        rank, world_size = process_rank()
        line = f"[rank {rank}/{world_size} on {current_host()}] {message}"
        if self.pipes is not None:
            self.pipes.log.info(line)
        else:
            print(line, file=sys.stderr, flush=True)

    def describe_output(self) -> None:
        """Hash the finished model directory here, where the bytes are, and tell the orchestrator (main rank)."""
        if not self.is_main_process or not self.model_dir.is_dir():
            return
        description = describe_directory(self.model_dir)
        if self.pipes is not None:
            self.pipes.report_custom_message({OUTPUT_DESCRIPTION_MESSAGE: description.model_dump()})

    def read_table(self, channel: str, table: Table) -> pd.DataFrame:
        """A channel's table (see `layouts`); a missing file or column is bad input, named, with exit code 2."""
        try:
            return table.read(self.channel(channel))
        except LayoutError as exc:
            raise StepInputError(str(exc)) from None

    def report(self, report: StepReport) -> None:
        """Send the step's report once, at the end (main process), with how long the step took to start and, on a
        GPU, its peak memory."""
        if not self.is_main_process:
            return
        if self.startup_seconds is not None:
            report = report.model_copy(update={"step_startup_seconds": round(self.startup_seconds, 3)})
        torch = sys.modules.get("torch")  # a step that never touched CUDA has no peak to report
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            report = report.model_copy(
                update={"peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3)})
        metadata = report.metadata()
        if self.pipes is not None:
            self.pipes.report_asset_materialization(metadata=metadata)
        else:
            print(json.dumps(metadata, default=str, indent=2))


@contextmanager
def _open_runtime(argv: list[str] | None) -> Iterator[StepRuntime]:
    if PipesEnvVarParamsLoader().is_dagster_pipes_process():
        transport: dict[str, Any] = {}
        if os.environ.get(PIPES_TRANSPORT_ENV) == PIPES_TRANSPORT_S3:
            import boto3

            s3 = boto3.client("s3")
            transport = {"context_loader": PipesS3ContextLoader(s3),
                         "message_writer": RankedS3MessageWriter(s3, interval=5.0)}
        elif os.environ.get(PIPES_TRANSPORT_ENV) == PIPES_TRANSPORT_SYNCED:
            transport = {"context_loader": ChannelContextLoader(),
                         "message_writer": SyncedFileMessageWriter(interval=5.0)}
        with open_dagster_pipes(**transport) as pipes:
            runtime = StepRuntime(sent=dict(pipes.extras.get("request", {})), pipes=pipes)
            if process_rank()[1] > 1:
                runtime.log_every_rank("step started")
            yield runtime
        return
    parser = argparse.ArgumentParser(description="Run an rlhf-assets step program by hand.")
    parser.add_argument("--request", type=Path, required=True, help="JSON file with the step's request")
    args = parser.parse_args(argv)
    yield StepRuntime(sent=json.loads(args.request.read_text()), pipes=None)


def keep_freed_memory() -> bool:
    """Let glibc keep freed blocks below 1 GiB for reuse instead of returning them to the kernel at once.

    Training allocates and frees the same large buffers every step (TRL's chunked log-prob kernel: tens of MB per
    tile); by default glibc serves each from a fresh mmap and unmaps it on free, so every step pays page faults and
    zeroing in the kernel. On the tiny preset that was 45 of SFT's 62 s (system time); with both thresholds raised
    the same step takes 34 s and writes the same bytes. Returns whether the allocator took the setting (glibc only).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, ALLOCATOR_THRESHOLD_BYTES)) and bool(
            libc.mallopt(M_TRIM_THRESHOLD, ALLOCATOR_THRESHOLD_BYTES))
    except (OSError, AttributeError):
        return False


def refuse_full_unpickling() -> bool:
    """Every `torch.load` in this process, and in the processes it starts, uses the weights-only unpickler, also
    where a library asks for the full one: DeepSpeed's universal-checkpoint and Nebula readers, accelerate's custom
    state, any reader this project never routed through `modeling/restricted_load`. A step reads stored files, and
    stored files are untrusted: a pickle naming code fails instead of running it (`modeling/weights_only.py`).
    Returns whether an inherited `TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD` was removed."""
    return force_weights_only()


def run_step(main: Callable[[StepRuntime], None], argv: list[str] | None = None) -> None:
    """Run a step's `main` and turn bad input into a one-line error and exit code 2 instead of a traceback."""
    removed_full_unpickling = refuse_full_unpickling()
    keep_freed_memory()
    try:
        with _open_runtime(argv) as runtime:
            if removed_full_unpickling:
                runtime.log(f"ignored {FORCE_FULL_ENV}=1 from the environment: a step never unpickles stored files "
                            "in full")
            runtime.startup_seconds = _seconds_since_launch()
            if runtime.startup_seconds is not None:
                runtime.log(f"step started {runtime.startup_seconds:.2f} s after launch")
            try:
                main(runtime)
            except StepInputError as exc:
                if runtime.pipes is not None:
                    runtime.pipes.log.error(f"bad input: {exc}")
                raise
            except Exception as exc:
                runtime.log_every_rank(f"failed: {type(exc).__name__}: {exc}")
                raise
            runtime.describe_output()
    except StepInputError as exc:
        _write_failure_reason(f"bad input: {exc}")
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(EXIT_BAD_INPUT)
    except Exception as exc:
        _write_failure_reason(f"{type(exc).__name__}: {exc}")
        traceback.print_exc()
        sys.exit(1)


def launched_with_deepspeed() -> bool:
    """Whether `accelerate launch` started this process with a DeepSpeed config (the recipe's ZeRO-2)."""
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


def _seconds_since_launch() -> float | None:
    """Launch to the step's first line of work (imports and Pipes set-up): what the warm worker saves."""
    launched = os.environ.get(LAUNCHED_AT_ENV)
    try:
        return max(0.0, time.time() - float(launched)) if launched else None
    except ValueError:
        return None


def _write_failure_reason(reason: str) -> None:
    """SageMaker reads `/opt/ml/output/failure` into the job's FailureReason; the local backend does too."""
    output_data = os.environ.get(OUTPUT_DATA_DIR_ENV)
    if output_data:
        failure = failure_file(Path(output_data))
        failure.parent.mkdir(parents=True, exist_ok=True)
        failure.write_text(reason[:1024])
