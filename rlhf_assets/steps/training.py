"""Pieces the SFT and reward steps share: device choice, resume, trainer arguments, throughput."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from transformers import (
    PrinterCallback,
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from rlhf_assets.checkpoint_integrity import MARKER_PREFIX, incomplete_reason, job_hosts, write_marker
from rlhf_assets.modeling.restricted_load import restrict_deepspeed_loading
from rlhf_assets.specs import TrainSpec
from rlhf_assets.steps.runtime import StepRuntime, launched_with_deepspeed


class CheckpointMarkerCallback(TrainerCallback):
    """Marks each saved `checkpoint-N` complete, per host, once every rank has written its part.

    The Trainer's own "trainer_state.json is written last" does not survive SageMaker's file-by-file S3 sync;
    the marker (`rlhf_assets.checkpoint_integrity`) lists every file with its size, so a partial restore is seen.
    """

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any) -> None:
        """A save into a directory left by an earlier, resumed-past run must not inherit that run's markers."""
        if control.should_save and state.is_local_process_zero:
            for marker in (Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}").glob(
                    f"{MARKER_PREFIX}*"):
                marker.unlink()

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()  # every rank's files (shards, RNG states) are on disk
        if state.is_local_process_zero:
            write_marker(Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()


def last_checkpoint(runtime: StepRuntime) -> str | None:
    """The newest complete `checkpoint-*` in the checkpoint dir, so a restarted job (spot, SIGKILL) resumes there.

    A checkpoint counts only when every host's marker is there and every file it lists is whole; one cut off
    mid-save or partly restored from S3 is skipped (transformers' own `get_last_checkpoint` would pick it and fail
    to resume, or resume from a torn file). Under DeepSpeed the resume reads its files through the restricted
    unpickler (`modeling/restricted_load`).
    """
    if launched_with_deepspeed():
        restrict_deepspeed_loading()
    directory: Path = runtime.checkpoint_dir
    prefix = f"{PREFIX_CHECKPOINT_DIR}-"
    candidates = sorted((p for p in directory.glob(f"{prefix}*") if p.is_dir() and p.name[len(prefix):].isdigit()),
                        key=lambda p: int(p.name[len(prefix):]), reverse=True) if directory.is_dir() else []
    for candidate in candidates:
        reason = incomplete_reason(candidate)
        if reason is None:
            runtime.log(f"resuming from {candidate}")
            return str(candidate)
        runtime.log(f"skipping {candidate}: {reason}")
    return None


def trainer_arguments(spec: TrainSpec, runtime: StepRuntime) -> dict[str, Any]:
    """TrainingArguments shared by TRL's SFT and reward configs, from the preset's `TrainSpec`."""
    deepspeed = launched_with_deepspeed()
    return {
        "output_dir": str(runtime.checkpoint_dir),
        "num_train_epochs": spec.epochs,
        "per_device_train_batch_size": spec.batch_size,
        "per_device_eval_batch_size": spec.batch_size,
        "gradient_accumulation_steps": spec.gradient_accumulation_steps,
        "learning_rate": spec.learning_rate,
        "lr_scheduler_type": "cosine",
        "warmup_steps": 0.05,
        "logging_steps": spec.logging_steps,
        "logging_first_step": True,
        "save_strategy": "steps",
        "save_steps": spec.save_steps,
        "save_total_limit": 2,
        # several hosts: each keeps (and rotates) its own checkpoint files, which its marker lists
        "save_on_each_node": len(job_hosts()) > 1,
        "eval_strategy": "no",
        "report_to": [],
        "seed": spec.seed,
        "data_seed": spec.seed,
        # bf16 where the hardware runs it: a GPU, or DeepSpeed (its CPU accelerator too, as the miniature runs it)
        "bf16": spec.bf16 and (torch.cuda.is_available() or deepspeed),
        "gradient_checkpointing": spec.gradient_checkpointing,
        "use_cpu": not torch.cuda.is_available(),
        # ranks on CPUs talk over gloo (NCCL needs GPUs); None keeps the default on GPUs and for one process
        "ddp_backend": "gloo" if not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
        else None,
        "dataloader_num_workers": 0,
        "disable_tqdm": True,
        "include_num_input_tokens_seen": "non_padding",
    }


def save_trained_model(trainer: Trainer, runtime: StepRuntime) -> None:
    """Save weights + tokenizer only: `training_args.bin` is a pickle with run-specific fields that would
    change the content hash of identical weights."""
    trainer.save_model(str(runtime.model_dir))
    trainer.processing_class.save_pretrained(runtime.model_dir)
    (runtime.model_dir / "training_args.bin").unlink(missing_ok=True)


def prepared(trainer: Trainer, runtime: StepRuntime) -> Trainer:
    """Drop the Trainer's own stdout printing (`RuntimeProgressCallback` reports the same numbers) and log how the
    step was launched, so a run shows that the recipe's ZeRO-2 really engaged rather than a silent fallback."""
    trainer.remove_callback(PrinterCallback)
    runtime.log(f"launch: {launch_description(trainer.accelerator)}")
    return trainer


def launch_description(accelerator: Accelerator) -> str:
    """e.g. `DeepSpeed ZeRO-2, bf16, 2 ranks over gloo` or `no distribution, fp32, 1 rank`."""
    state = accelerator.state
    precision = {"no": "fp32"}.get(str(state.mixed_precision), str(state.mixed_precision))
    ranks = f"{state.num_processes} rank{'s' if state.num_processes > 1 else ''}"
    backend = f" over {state.backend}" if state.num_processes > 1 and state.backend else ""
    if state.deepspeed_plugin is not None:
        return f"DeepSpeed ZeRO-{state.deepspeed_plugin.zero_stage}, {precision}, {ranks}{backend}"
    return f"{str(state.distributed_type.value).lower()}, {precision}, {ranks}{backend}"


def tokens_per_second(tokens: float, seconds: float) -> float:
    """Throughput that tolerates a zero-length run (a resume that found training already done)."""
    return tokens / seconds if seconds > 0 else 0.0
