"""Model assets: the base model, the SFT checkpoint, the reward model and judge, and the PPO and DPO policies."""


from collections.abc import Callable
from enum import Enum
from typing import Any, get_args

from dagster import AssetExecutionContext, AssetsDefinition, Output, asset
from pydantic import Field

from rlhf_assets.assets.data import JUDGE_SPLIT
from rlhf_assets.assets.step_runs import StepConfig, run_step_and_publish
from rlhf_assets.code_versions import step_code_version
from rlhf_assets.compute.backend import ComputeBackend
from rlhf_assets.presets import DPOSpec, PPOSpec, Preset, RewardSpec, TrainSpec
from rlhf_assets.resources import ArtifactStoreResource
from rlhf_assets.storage import Manifest

GPU_POOL = "gpu"


class TrainOverrides(StepConfig):
    """Optional overrides of the preset's training settings, bounded like the preset's own fields."""

    epochs: float | None = Field(default=None, gt=0.0, description="Override the preset's number of epochs")
    learning_rate: float | None = Field(default=None, gt=0.0, description="Override the preset's learning rate")
    max_train_rows: int | None = Field(default=None, ge=1, description="Train on at most this many rows")
    save_steps: int | None = Field(default=None, ge=1, description="Override the checkpoint interval (optimizer "
                                   "steps); a killed or preempted step resumes from the newest checkpoint")
    force_memory_plan: bool = Field(default=False, description="Run even when the step's GPU memory plan says it "
                                    "will not fit (the plan is still logged)")

    def apply(self, spec: TrainSpec) -> dict[str, Any]:
        """The preset's spec with these overrides, re-validated so bounds hold for the merged values."""
        updates = {k: getattr(self, k) for k in ("epochs", "learning_rate", "max_train_rows", "save_steps")}
        merged = {**spec.model_dump(), **{k: v for k, v in updates.items() if v is not None}}
        return type(spec).model_validate(merged).model_dump()


class RewardMode(Enum):
    """How `reward_model` gets its model: trained here, or a published trlx checkpoint."""

    train = "train"
    pretrained = "pretrained"


class RewardModelConfig(TrainOverrides):
    """Reward-model overrides: training settings and the mode."""

    mode: RewardMode | None = Field(
        default=None, description="Override the preset: train on preferences, or load a trlx reward model"
    )

    def apply(self, spec: TrainSpec) -> dict[str, Any]:
        merged = super().apply(spec)
        return RewardSpec.model_validate({**merged, **({"mode": self.mode.value} if self.mode else {})}).model_dump()


@asset(code_version=step_code_version("base_model"), group_name="models", kinds={"pytorch"})
def base_model(
    context: AssetExecutionContext,
    config: StepConfig,
    compute: ComputeBackend,
    artifacts: ArtifactStoreResource,
    preference_dataset: Manifest,
) -> Output[Manifest]:
    """The starting point of every trained model: a hub checkpoint, or for `tiny` a BPE tokenizer fit on the
    training text and a freshly initialised small GPT-NeoX."""
    preset = config.resolved_preset()
    step_config = {"base_model": preset.base_model.model_dump(), "seed": preset.sft.seed}
    return run_step_and_publish(context, config=config, step="base_model", preset=preset, step_config=step_config,
                            inputs={"preference": preference_dataset}, compute=compute, artifacts=artifacts)


@asset(code_version=step_code_version("sft"), group_name="models", kinds={"pytorch", "trl"}, pool=GPU_POOL)
def sft_model(
    context: AssetExecutionContext,
    config: TrainOverrides,
    compute: ComputeBackend,
    artifacts: ArtifactStoreResource,
    base_model: Manifest,
    preference_dataset: Manifest,
) -> Output[Manifest]:
    """The SFT checkpoint: the base model fine-tuned on prompt + chosen with loss on the response (TRL SFTTrainer)."""
    preset = config.resolved_preset()
    step_config = {"train": config.apply(preset.sft), "force_memory_plan": config.force_memory_plan}
    return run_step_and_publish(context, config=config, step="sft", preset=preset, step_config=step_config,
                            inputs={"base_model": base_model, "preference": preference_dataset},
                            compute=compute, artifacts=artifacts)


def _reward_asset(name: str, train_split: str, spec_of: Callable[[Preset], RewardSpec], doc: str) -> AssetsDefinition:
    """A reward-model asset: the reward step from the SFT checkpoint on one split of the preference data."""

    @asset(name=name, code_version=step_code_version("reward"),
           group_name="models", kinds={"pytorch", "trl"}, pool=GPU_POOL,
           description=doc)
    def reward_asset(
        context: AssetExecutionContext,
        config: RewardModelConfig,
        compute: ComputeBackend,
        artifacts: ArtifactStoreResource,
        sft_model: Manifest,
        preference_dataset: Manifest,
    ) -> Output[Manifest]:
        preset = config.resolved_preset()
        step_config = {"reward": config.apply(spec_of(preset)), "train_split": train_split,
                       "force_memory_plan": config.force_memory_plan}
        return run_step_and_publish(context, config=config, step="reward", preset=preset, step_config=step_config,
                                    inputs={"sft_model": sft_model, "preference": preference_dataset},
                                    compute=compute, artifacts=artifacts)

    return reward_asset


reward_model = _reward_asset(
    "reward_model", "train", lambda preset: preset.reward,
    "The reward model: trained from the SFT checkpoint on chosen/rejected pairs (TRL RewardTrainer), or a "
    "published trlx reward model such as `Dahoas/gptj-rm-static`; scored by held-out pairwise accuracy.")
judge_model = _reward_asset(
    "judge_model", JUDGE_SPLIT, lambda preset: preset.judge,
    "The independent judge of `auto_preference`: a second reward model, trained like `reward_model` but on the "
    "judge split of the preference data, which no other model sees. PPO is optimised against `reward_model`, so "
    "that model's verdict on the policy is biased; this one's is not. Scored on the same held-out pairs.")


class PolicyOptimizer(Enum):
    """Which optimiser trains `ppo_policy`: ours (the recipe's PPO) or TRL's RLOO / GRPO."""

    ppo = "ppo"
    rloo = "rloo"
    grpo = "grpo"


class PPOOverrides(StepConfig):
    """Optional overrides of the preset's PPO settings; the merged config is validated as a whole."""

    total_steps: int | None = Field(default=None, ge=1, description="Override the preset's optimizer steps")
    learning_rate: float | None = Field(default=None, gt=0.0, description="Override the preset's learning rate")
    init_kl_coef: float | None = Field(default=None, ge=0.0, description="Override the initial KL coefficient β")
    kl_target: float | None = Field(default=None, gt=0.0, description="Override the adaptive controller's KL target")
    algorithm: PolicyOptimizer | None = Field(
        default=None, description="Override the optimiser: ppo (ours, the recipe's), rloo or grpo (TRL)"
    )
    seed: int | None = Field(default=None, description="Override the seed of training (value-head init, prompt "
                             "order, rollout sampling) and of the SFT-vs-policy comparison's sampling")
    force_memory_plan: bool = Field(default=False, description="Run even when the GPU memory plan says it will "
                                    "not fit (the plan is still logged)")

    def apply(self, spec: PPOSpec) -> dict[str, Any]:
        """The preset's PPO spec with overrides, validated as a whole (e.g. chunk_size ≤ num_rollouts)."""
        renamed = {"total_steps": self.total_steps, "learning_rate": self.learning_rate,
                   "init_kl_coef": self.init_kl_coef, "target": self.kl_target, "seed": self.seed}
        config = {**spec.config.model_dump(), **{k: v for k, v in renamed.items() if v is not None}}
        algorithm = {"algorithm": self.algorithm.value} if self.algorithm else {}
        return PPOSpec.model_validate({**spec.model_dump(), **algorithm, "config": config}).model_dump()


@asset(code_version=step_code_version("ppo"), group_name="models", kinds={"pytorch"}, pool=GPU_POOL)
def ppo_policy(
    context: AssetExecutionContext,
    config: PPOOverrides,
    compute: ComputeBackend,
    artifacts: ArtifactStoreResource,
    sft_model: Manifest,
    reward_model: Manifest,
    preference_dataset: Manifest,
    eval_prompts: Manifest,
) -> Output[Manifest]:
    """The RLHF policy: the SFT model optimised with PPO against the reward model, KL-held to the SFT model.

    Metadata shows the reward and KL curves, the final KL coefficient, reward-hacking warnings, and the
    SFT-vs-PPO reward on the held-out eval prompts with a paired bootstrap 95% CI.
    """
    preset = config.resolved_preset()
    step_config = {"ppo": config.apply(preset.ppo), "force_memory_plan": config.force_memory_plan}
    return run_step_and_publish(context, config=config, step="ppo", preset=preset, step_config=step_config,
                            inputs={"sft_model": sft_model, "reward_model": reward_model,
                                    "preference": preference_dataset, "eval_prompts": eval_prompts},
                            compute=compute, artifacts=artifacts, reserved_processes=preset.compute.reward_model_gpus)


DPOLoss = Enum("DPOLoss", {name: name for name in get_args(DPOSpec.model_fields["loss_type"].annotation)})
DPOLoss.__doc__ = "TRL's DPO losses this project offers (the preset's `dpo.loss_type` values)."


class DPOOverrides(TrainOverrides):
    """DPO overrides: training settings, β and the loss."""

    beta: float | None = Field(default=None, gt=0.0, description="Override β: how strongly the policy is held to "
                               "the SFT reference")
    loss_type: DPOLoss | None = Field(default=None, description="Override TRL's DPO loss: sigmoid is the paper's, "
                                      "ipo does not saturate, hinge is SLiC's, robust assumes noisy labels")

    def apply(self, spec: TrainSpec) -> dict[str, Any]:
        merged = super().apply(spec)
        loss = self.loss_type.value if self.loss_type else None
        updates = {k: v for k, v in (("beta", self.beta), ("loss_type", loss)) if v is not None}
        return DPOSpec.model_validate({**merged, **updates}).model_dump()


@asset(code_version=step_code_version("dpo"), group_name="models", kinds={"pytorch", "trl"}, pool=GPU_POOL)
def dpo_policy(
    context: AssetExecutionContext,
    config: DPOOverrides,
    compute: ComputeBackend,
    artifacts: ArtifactStoreResource,
    sft_model: Manifest,
    preference_dataset: Manifest,
) -> Output[Manifest]:
    """A DPO policy: the SFT model trained directly on the reward model's preference pairs (TRL DPOTrainer), with
    the SFT model as the frozen reference; no reward model, no sampling.

    Metadata shows the implicit reward's accuracy and margin curves and the held-out preference accuracy (share
    of test pairs where the policy's implicit reward ranks chosen above rejected) with a Wilson 95% CI.
    """
    preset = config.resolved_preset()
    step_config = {"dpo": config.apply(preset.dpo), "force_memory_plan": config.force_memory_plan}
    return run_step_and_publish(context, config=config, step="dpo", preset=preset, step_config=step_config,
                                inputs={"sft_model": sft_model, "preference": preference_dataset},
                                compute=compute, artifacts=artifacts)
