"""The contracts of the model steps: hub snapshots, the base model, SFT, reward models, PPO / RLOO / GRPO and DPO."""

from __future__ import annotations

from rlhf_assets.data.hub_sources import HubSource
from rlhf_assets.specs import BaseModelSpec, DPOSpec, PPOSpec, RewardSpec, TrainSpec
from rlhf_assets.step_contracts.base import (
    ControlledEstimate,
    Estimate,
    Figures,
    Markdown,
    StepReport,
    StepRequest,
)


class MemoryPlanFigures(Figures):
    """A GPU step's memory plan (`compute/memory_plan.py`): its table, and the GiB one rank needs."""

    BARE = "table"
    table: Markdown
    rank_gib: float


class TrainingFigures(StepReport):
    """What every TRL training step reports."""

    train_loss: float
    train_rows: int
    global_steps: int
    parameter_count: int
    memory_plan: MemoryPlanFigures | None = None
    loss_curve: Markdown


class PlannedRequest(StepRequest):
    """A request to a step that plans its GPU memory before loading weights, and refuses a plan that cannot fit."""

    force_memory_plan: bool = False  # run anyway (the plan is still logged and reported)


class HubSnapshotReport(StepReport):
    role: str
    source: str
    commit: str
    file_count: int
    size_bytes: int


class HubSnapshotRequest(StepRequest):
    """Stage one pinned hub repository (or nothing, for a local source) as an artifact."""

    STEP = "hub_snapshot"
    REPORT = HubSnapshotReport
    source: HubSource


class BaseModelReport(StepReport):
    parameter_count: int
    vocab_size: int
    kind: str
    source: str


class BaseModelRequest(StepRequest):
    """The starting model: the pinned checkpoint, or a tiny one built and seeded here."""

    STEP = "base_model"
    REPORT = BaseModelReport
    base_model: BaseModelSpec
    seed: int = 0


class SFTReport(TrainingFigures):
    eval_loss: float
    eval_perplexity: float
    tokens_per_second: float
    train_tokens: int


class SFTRequest(PlannedRequest):
    STEP = "sft"
    REPORT = SFTReport
    train: TrainSpec


class RewardReport(StepReport):
    """Both modes: a trained model reports its training figures, a converted published one its source."""

    eval_accuracy: float
    eval_mean_margin: float
    eval_pairs: int
    parameter_count: int
    mode: str
    train_split: str
    readout: str
    source: str | None = None
    train_loss: float | None = None
    train_rows: int | None = None
    global_steps: int | None = None
    memory_plan: MemoryPlanFigures | None = None
    loss_curve: Markdown | None = None


class RewardRequest(PlannedRequest):
    """`train_split` picks the training pairs: `train` for the reward model, `judge_train` for the judge."""

    STEP = "reward"
    REPORT = RewardReport
    reward: RewardSpec
    train_split: str = "train"


class PolicyReport(StepReport):
    """The trained policy against SFT on the held-out prompts (by the reward model it optimised), and training."""

    algorithm: str
    eval_prompts: int
    eval_sft_reward_mean: float
    eval_policy_reward_mean: float
    eval_reward_gain: ControlledEstimate
    eval_kl_to_sft: Estimate
    eval_kl_bound: float
    final_kl_coef: float
    resumed_from_step: int | None = None
    snapshots: int
    steps: int
    final_rollout_score: float
    final_rollout_kl: float
    memory_plan: MemoryPlanFigures | None = None
    summary: Markdown
    warnings: Markdown
    reward_curve: Markdown
    kl_curve: Markdown


class PolicyRequest(PlannedRequest):
    STEP = "ppo"
    REPORT = PolicyReport
    ppo: PPOSpec


class DPOReport(TrainingFigures):
    eval_accuracy: Estimate
    eval_reward_margin: float
    eval_loss: float
    eval_pairs: int
    beta: float
    loss_type: str
    summary: Markdown
    reward_curves: Markdown


class DPORequest(PlannedRequest):
    STEP = "dpo"
    REPORT = DPOReport
    dpo: DPOSpec

