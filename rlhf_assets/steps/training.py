"""Pieces the SFT and reward steps share: device choice, resume, trainer arguments, throughput."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import PrinterCallback, Trainer

from rlhf_assets.presets import TrainSpec
from rlhf_assets.steps.runtime import StepRuntime


def last_checkpoint(runtime: StepRuntime) -> str | None:
    """The newest complete `checkpoint-*` in the checkpoint dir, so a restarted job (spot, SIGKILL) resumes there.

    The Trainer writes `trainer_state.json` last; a checkpoint without it was cut off mid-save and is skipped
    (transformers' own `get_last_checkpoint` would pick it and fail to resume).
    """
    directory: Path = runtime.checkpoint_dir
    candidates = sorted((p for p in directory.glob("checkpoint-*") if p.is_dir() and p.name[11:].isdigit()),
                        key=lambda p: int(p.name[11:]), reverse=True) if directory.is_dir() else []
    for candidate in candidates:
        if (candidate / "trainer_state.json").is_file():
            runtime.log(f"resuming from {candidate}")
            return str(candidate)
        runtime.log(f"skipping {candidate}: cut off while saving (no trainer_state.json)")
    return None


def trainer_arguments(spec: TrainSpec, runtime: StepRuntime) -> dict[str, Any]:
    """TrainingArguments shared by TRL's SFT and reward configs, from the preset's `TrainSpec`."""
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
        "eval_strategy": "no",
        "report_to": [],
        "seed": spec.seed,
        "data_seed": spec.seed,
        "bf16": spec.bf16 and torch.cuda.is_available(),
        "use_cpu": not torch.cuda.is_available(),
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


def quiet_console(trainer: Trainer) -> Trainer:
    """Drop the Trainer's own stdout printing; `RuntimeProgressCallback` reports the same numbers."""
    trainer.remove_callback(PrinterCallback)
    return trainer


def tokens_per_second(tokens: float, seconds: float) -> float:
    """Throughput that tolerates a zero-length run (a resume that found training already done)."""
    return tokens / seconds if seconds > 0 else 0.0
