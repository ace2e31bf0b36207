"""Per-rank GPU memory plans for the GPU steps, checked before any weights are loaded.

A 6-B-parameter PPO run that does not fit fails minutes into a paid job with a CUDA OOM that names no cause.
The plan adds up what each training rank holds — weights, gradients and optimizer states of the trainable
parameters under the launch's ZeRO stage, the reference model, the reward model where it shares a GPU — and the
largest of the working sets that come and go (generation's KV cache, the no-grad rollout forward, the training
forward/backward), so a plan that cannot fit is refused with the terms that make it too big.

Byte counts follow the ZeRO paper (Rajbhandari et al. 2020: 2 bytes of bf16 weights, 12 bytes of fp32 master
weights + Adam moments per trainable parameter, split across ranks from stage 1) and per-layer activation sizes
after Korthikanti et al. 2022 (34·s·b·h bytes per transformer layer in 16-bit with fused attention).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict

from rlhf_assets.ppo.config import PPOConfig

GIB = 1024**3
CUDA_CONTEXT_GIB = 1.0
"""CUDA context, cuBLAS workspaces and NCCL buffers: real GPU memory that PyTorch's allocator does not count."""

A100_40, A100_80, H100, H200, V100_16, V100_32, A10G, L4 = 39.4, 79.1, 79.1, 139.8, 15.8, 31.7, 22.1, 22.0
INSTANCE_GPUS: dict[str, tuple[int, float]] = {
    "ml.p4d.24xlarge": (8, A100_40),
    "ml.p4de.24xlarge": (8, A100_80),
    "ml.p5.48xlarge": (8, H100),
    "ml.p5e.48xlarge": (8, H200),
    "ml.p5en.48xlarge": (8, H200),
    "ml.p3.2xlarge": (1, V100_16),
    "ml.p3.8xlarge": (4, V100_16),
    "ml.p3.16xlarge": (8, V100_16),
    "ml.p3dn.24xlarge": (8, V100_32),
    "ml.g5.xlarge": (1, A10G),
    "ml.g5.2xlarge": (1, A10G),
    "ml.g5.12xlarge": (4, A10G),
    "ml.g5.48xlarge": (8, A10G),
    "ml.g6.xlarge": (1, L4),
    "ml.g6.12xlarge": (4, L4),
    "ml.g6.48xlarge": (8, L4),
}
"""SageMaker instance type → (GPUs, GiB per GPU as the driver reports it: an "A100 40GB" shows 39.4 GiB)."""

ACTIVATION_UNITS_PER_LAYER = 17
"""Saved tensors per trained layer in units of batch·seq·hidden elements (34 bytes at 2 bytes each)."""


class MemoryPlanError(ValueError):
    """A plan above the GPU's memory; the message names the largest terms and how to get past them."""


@dataclass(frozen=True)
class Precision:
    """How weights and optimizer states are held: DeepSpeed ZeRO (stage, 16-bit) or accelerate mixed precision."""

    zero_stage: int | None
    mixed_precision: str

    @classmethod
    def from_accelerate_config(cls, path: Path | None) -> Precision:
        """Read an accelerate config file (None: one process, no mixed precision)."""
        if path is None:
            return cls(None, "no")
        data = yaml.safe_load(path.read_text())
        if data.get("distributed_type") != "DEEPSPEED":
            return cls(None, data.get("mixed_precision", "no"))
        deepspeed = data.get("deepspeed_config", {})
        if "deepspeed_config_file" in deepspeed:  # a DeepSpeed JSON config names the stage and precision itself
            ds = json.loads((path.parent / deepspeed["deepspeed_config_file"]).read_text())
            precision = "bf16" if ds.get("bf16", {}).get("enabled") else "fp16" if ds.get("fp16", {}).get(
                "enabled") else "no"
            return cls(int(ds.get("zero_optimization", {}).get("stage", 0)), precision)
        return cls(deepspeed.get("zero_stage"), data.get("mixed_precision", "no"))

    @classmethod
    def from_environment(cls) -> Precision:
        """What `accelerate launch` told this process (ACCELERATE_* variables); plain fp32 without it."""
        stage = os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE")
        deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
        return cls(int(stage) if deepspeed and stage else None, os.environ.get("ACCELERATE_MIXED_PRECISION", "no"))

    @property
    def weight_bytes(self) -> int:
        """DeepSpeed keeps 16-bit weights (fp32 masters live in the optimizer); autocast keeps fp32 weights."""
        return 2 if self.zero_stage is not None and self.mixed_precision in ("bf16", "fp16") else 4

    def describe(self) -> str:
        if self.zero_stage is None:
            return f"no DeepSpeed, mixed precision {self.mixed_precision}"
        return f"DeepSpeed ZeRO-{self.zero_stage} {self.mixed_precision}"


@dataclass(frozen=True)
class ModelShape:
    """The sizes a plan needs, counted from a model config on the meta device (no weights, no download)."""

    parameters: int
    layers: int
    layer_parameters: int
    head_parameters: int  # final norm + LM head (or score head)
    hidden: int
    vocab: int
    kv_width: int  # key (= value) width per token per layer

    @classmethod
    def from_config(cls, config: object, *, classifier: bool = False) -> ModelShape:
        """Count parameters of `config`'s causal LM (or sequence classifier) without allocating any."""
        import torch
        from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

        from rlhf_assets.ppo.value_head import final_norm, transformer_layers

        factory = AutoModelForSequenceClassification if classifier else AutoModelForCausalLM
        with torch.device("meta"):
            model = factory.from_config(config)
        layers = transformer_layers(model)
        head = model.get_output_embeddings() if not classifier else model.score
        heads = getattr(config, "num_attention_heads", None) or config.n_head
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        hidden = config.hidden_size
        head_dim = getattr(config, "head_dim", None) or hidden // heads
        return cls(
            parameters=sum(p.numel() for p in model.parameters()),
            layers=len(layers),
            layer_parameters=sum(p.numel() for p in layers[0].parameters()),
            head_parameters=sum(p.numel() for m in (final_norm(model), head) for p in m.parameters()),
            hidden=hidden,
            vocab=config.vocab_size,
            kv_width=head_dim * kv_heads,
        )


class MemoryTerm(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    phase: str  # "held" for the whole run, else the working set it belongs to
    bytes: float
    training_only: bool = False  # held during training, released before the final evaluation


class MemoryPlan(BaseModel):
    """Estimated bytes per training rank (and on the reward model's own GPU, when it has one)."""

    model_config = ConfigDict(frozen=True)

    title: str
    setup: str
    terms: list[MemoryTerm]
    reward_gpu_terms: list[MemoryTerm] = []
    gpu_gib: float | None = None
    gpu_source: str = "no GPU"

    @staticmethod
    def _phase_totals(terms: list[MemoryTerm]) -> dict[str, float]:
        """Bytes in use during each working phase: what is held then, plus the phase's own terms."""
        phases = {t.phase for t in terms if t.phase != "held"} or {"held"}
        return {phase: sum(t.bytes for t in terms if t.phase == phase or (
            t.phase == "held" and not (phase == "evaluation" and t.training_only))) for phase in phases}

    def _peak(self, terms: list[MemoryTerm]) -> float:
        return max(self._phase_totals(terms).values(), default=0.0)

    @property
    def peak_phase(self) -> str:
        totals = self._phase_totals(self.terms)
        return max(totals, key=totals.__getitem__)

    def phase_gib(self) -> dict[str, float]:
        """Planned GiB in use during each phase of a training rank."""
        return {phase: total / GIB for phase, total in self._phase_totals(self.terms).items()}

    @property
    def rank_gib(self) -> float:
        """Peak bytes PyTorch's allocator should report on a training rank (`max_memory_allocated`)."""
        return self._peak(self.terms) / GIB

    @property
    def reward_gpu_gib(self) -> float:
        return self._peak(self.reward_gpu_terms) / GIB

    def lines(self) -> list[str]:
        """The plan as log lines, largest terms first within each phase."""
        out = [f"memory plan ({self.title}; {self.setup}; GPU: {self.gpu_source}):"]
        for phase in ["held", *sorted({t.phase for t in self.terms} - {"held"})]:
            for term in sorted((t for t in self.terms if t.phase == phase), key=lambda t: -t.bytes):
                out.append(f"  {phase:<17} {term.name:<52} {term.bytes / GIB:8.2f} GiB")
        out.append(f"  per training rank at peak ({self.peak_phase}): {self.rank_gib:.2f} GiB "
                   f"+ {CUDA_CONTEXT_GIB:.1f} GiB CUDA context")
        for term in self.reward_gpu_terms:
            out.append(f"  reward-model GPU  {term.name:<52} {term.bytes / GIB:8.2f} GiB")
        if self.reward_gpu_terms:
            out.append(f"  reward-model GPU at peak: {self.reward_gpu_gib:.2f} GiB + {CUDA_CONTEXT_GIB:.1f} GiB")
        return out

    def markdown(self) -> str:
        rows = [f"| {t.phase} | {t.name} | {t.bytes / GIB:.2f} |" for t in self.terms]
        rows += [f"| reward-model GPU | {t.name} | {t.bytes / GIB:.2f} |" for t in self.reward_gpu_terms]
        return "\n".join([
            f"**{self.title}** ({self.setup}; GPU: {self.gpu_source})", "",
            "| phase | term | GiB |", "|---|---|---|", *rows, "",
            f"Per training rank at peak ({self.peak_phase}): **{self.rank_gib:.2f} GiB** "
            f"+ {CUDA_CONTEXT_GIB:.1f} GiB CUDA context"
            + (f"; reward-model GPU: **{self.reward_gpu_gib:.2f} GiB**" if self.reward_gpu_terms else ""),
        ])

    def check(self, force: bool, log: Callable[[str], None]) -> None:
        """Refuse a plan over the GPU's memory (unless `force`), naming the largest terms."""
        if self.gpu_gib is None:
            log("memory plan not checked: no GPU")
            return
        problems = []
        for where, gib, terms in (("each training rank", self.rank_gib, self.terms),
                                  ("the reward-model GPU", self.reward_gpu_gib, self.reward_gpu_terms)):
            if terms and gib + CUDA_CONTEXT_GIB > self.gpu_gib:
                totals = self._phase_totals(terms)
                phase = max(totals, key=totals.__getitem__)
                in_use = [t for t in terms if t.phase == phase or (
                    t.phase == "held" and not (phase == "evaluation" and t.training_only))]
                named = ", ".join(f"{t.name} {t.bytes / GIB:.1f} GiB"
                                  for t in sorted(in_use, key=lambda t: -t.bytes)[:3])
                problems.append(f"{where} needs {gib:.1f} GiB ({phase}) + {CUDA_CONTEXT_GIB:.1f} GiB CUDA context, "
                                f"over the {self.gpu_gib:.1f} GiB of a GPU ({self.gpu_source}); largest terms: {named}")
        if not problems:
            log(f"memory plan fits: {self.rank_gib + CUDA_CONTEXT_GIB:.1f} of {self.gpu_gib:.1f} GiB per rank")
            return
        message = "; ".join(problems) + (". Lower the batch, chunk or sequence sizes, train fewer layers, use more "
                                         "ranks or a larger instance — or set force_memory_plan: true to run anyway")
        if not force:
            raise MemoryPlanError(f"memory plan refused: {message}")
        log(f"WARNING (force_memory_plan): {message}")


def gpu_capacity(instance_type: str | None) -> tuple[float | None, str]:
    """(GiB per GPU, where that figure came from): the SageMaker instance table, else this machine's GPU."""
    if instance_type in INSTANCE_GPUS:
        return INSTANCE_GPUS[instance_type][1], f"{instance_type}, {INSTANCE_GPUS[instance_type][1]:.1f} GiB"
    import torch

    if torch.cuda.is_available():
        total = torch.cuda.get_device_properties(0).total_memory / GIB
        return total, f"{torch.cuda.get_device_name(0)}, {total:.1f} GiB"
    return None, "no GPU"


def _trainable(shape: ModelShape, layers_unfrozen: int, lora_rank: int) -> float:
    if lora_rank:
        return 2 * shape.layers * lora_rank * 2 * shape.hidden  # PEFT's default targets: query and value
    if layers_unfrozen < 0:
        return shape.parameters
    return layers_unfrozen * shape.layer_parameters + shape.head_parameters


def _state_terms(shape: ModelShape, trainable: float, precision: Precision, ranks: int) -> list[MemoryTerm]:
    """Weights, gradients and optimizer states of one rank (the `held` part of training)."""
    if precision.zero_stage is None:
        return [
            MemoryTerm(name="weights (fp32)", phase="held", bytes=4 * shape.parameters),
            MemoryTerm(name="gradients of trainable parameters (fp32)", phase="held", bytes=4 * trainable,
                       training_only=True),
            MemoryTerm(name="Adam moments (fp32)", phase="held", bytes=8 * trainable, training_only=True),
        ]
    stage = precision.zero_stage
    split = ranks if stage >= 1 else 1
    return [
        MemoryTerm(name=f"weights (16-bit{', sharded' if stage >= 3 else ''})", phase="held",
                   bytes=2 * shape.parameters / (ranks if stage >= 3 else 1)),
        MemoryTerm(name=f"gradients (16-bit{', sharded' if stage >= 2 else ''} + fp32 partition)", phase="held",
                   bytes=2 * trainable / (ranks if stage >= 2 else 1) + 4 * trainable / split, training_only=True),
        MemoryTerm(name=f"fp32 master weights + Adam moments (/{split} ranks)", phase="held",
                   bytes=12 * trainable / split, training_only=True),
    ]


def ppo_plan(
    shape: ModelShape,
    config: PPOConfig,
    precision: Precision,
    ranks: int,
    reward: ModelShape | None,
    *,
    reward_batch_size: int,
    reward_on_own_gpu: bool,
    gpu: tuple[float | None, str] = (None, "no GPU"),
) -> MemoryPlan:
    """The plan of one PPO training rank (and of the reward model's GPU when it has its own)."""
    c = config
    wbytes = precision.weight_bytes
    value_head = 2 * shape.hidden * shape.hidden + 4 * shape.hidden + 1
    trainable = _trainable(shape, c.num_layers_unfrozen, c.lora_rank) + value_head
    terms = _state_terms(shape, trainable, precision, ranks)
    kind = c.reference_kind
    if kind == "hydra":
        branch = c.num_layers_unfrozen * shape.layer_parameters + shape.head_parameters
        terms.append(MemoryTerm(name=f"reference: hydra branch ({c.num_layers_unfrozen} blocks + norm + head)",
                                phase="held", bytes=wbytes * branch, training_only=True))
    elif kind == "full_copy":
        terms.append(MemoryTerm(name="reference: full frozen copy", phase="held", bytes=wbytes * shape.parameters))
    trained_layers = shape.layers if c.num_layers_unfrozen < 0 or c.lora_rank else c.num_layers_unfrozen
    bsh = c.batch_size * c.seq_length * shape.hidden
    csh = c.chunk_size * c.seq_length * shape.hidden
    terms += [
        MemoryTerm(name=f"KV cache ({c.chunk_size} × {c.seq_length} tokens)", phase="generation",
                   bytes=2 * shape.layers * c.chunk_size * c.seq_length * shape.kv_width * wbytes),
        MemoryTerm(name="prefill MLP activations", phase="generation", bytes=2 * 4 * csh * wbytes),
        MemoryTerm(name=f"logits, log-probs, entropy ({c.chunk_size} × {c.max_new_tokens + 1} × vocab)",
                   phase="rollout forward",
                   bytes=c.chunk_size * (c.max_new_tokens + 1) * shape.vocab * (2 * wbytes + 16)),
        MemoryTerm(name="one block's working set", phase="rollout forward", bytes=2 * 4 * csh * wbytes),
        MemoryTerm(name=f"activations of {trained_layers} trained blocks ({c.batch_size} × {c.seq_length})",
                   phase="training", bytes=ACTIVATION_UNITS_PER_LAYER * trained_layers * bsh * wbytes),
        MemoryTerm(name=f"logits and log-softmax ({c.batch_size} × {c.max_new_tokens + 1} × vocab)", phase="training",
                   bytes=c.batch_size * (c.max_new_tokens + 1) * shape.vocab * (wbytes + 8)),
        MemoryTerm(name="frozen blocks' working set", phase="training", bytes=2 * 4 * bsh * wbytes),
    ]
    if kind != "full_copy":  # the SFT-vs-PPO comparison at the end loads the whole SFT model on the main rank
        terms.append(MemoryTerm(name="SFT model for the final comparison (main rank)", phase="evaluation",
                                bytes=wbytes * shape.parameters))
    terms.append(MemoryTerm(name=f"evaluation KV cache ({c.chunk_size} × {c.seq_length} tokens)",
                            phase="evaluation",
                            bytes=2 * shape.layers * c.chunk_size * c.seq_length * shape.kv_width * wbytes))
    reward_terms: list[MemoryTerm] = []
    if reward is not None:
        scored = [
            MemoryTerm(name="reward model (fp16)", phase="held", bytes=2 * reward.parameters),
            MemoryTerm(name=f"reward scoring ({reward_batch_size} × {c.seq_length})", phase="scoring",
                       bytes=2 * 4 * reward_batch_size * c.seq_length * reward.hidden * 2),
        ]
        if reward_on_own_gpu:
            reward_terms = scored
        else:
            terms += [scored[0].model_copy(update={"name": "reward model (fp16, main rank)"}),
                      scored[1].model_copy(update={"phase": "rollout forward"})]
    setup = f"{precision.describe()}, {ranks} training rank{'s' if ranks > 1 else ''}, reference {kind}"
    return MemoryPlan(title="ppo_policy", setup=setup, terms=terms, reward_gpu_terms=reward_terms,
                      gpu_gib=gpu[0], gpu_source=gpu[1])


def finetune_plan(
    title: str,
    shape: ModelShape,
    precision: Precision,
    ranks: int,
    *,
    batch_size: int,
    max_length: int,
    sequences_per_row: int,
    language_model_head: bool,
    frozen_reference: bool = False,
    gpu: tuple[float | None, str] = (None, "no GPU"),
) -> MemoryPlan:
    """Full fine-tuning (SFT: one sequence per row, LM logits; reward: chosen + rejected, a scalar head; DPO:
    chosen + rejected with LM logits and a frozen reference copy of the starting model)."""
    terms = _state_terms(shape, shape.parameters, precision, ranks)
    wbytes = precision.weight_bytes
    if frozen_reference:
        terms.append(MemoryTerm(name="reference: full frozen copy", phase="held", bytes=wbytes * shape.parameters))
    sequences = batch_size * sequences_per_row
    bsh = sequences * max_length * shape.hidden
    terms.append(MemoryTerm(name=f"activations of {shape.layers} blocks ({sequences} × {max_length})",
                            phase="training", bytes=ACTIVATION_UNITS_PER_LAYER * shape.layers * bsh * wbytes))
    if language_model_head:
        terms.append(MemoryTerm(name=f"logits and fp32 loss ({sequences} × {max_length} × vocab)", phase="training",
                                bytes=sequences * max_length * shape.vocab * (wbytes + 8)))
    setup = f"{precision.describe()}, {ranks} rank{'s' if ranks > 1 else ''}"
    return MemoryPlan(title=title, setup=setup, terms=terms, gpu_gib=gpu[0], gpu_source=gpu[1])
