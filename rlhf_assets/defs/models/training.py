"""Model assets: the base model, the SFT checkpoint, the reward model and judge, and the PPO and DPO policies."""


from collections.abc import Callable

from dagster import AssetExecutionContext, AssetIn, AssetsDefinition, Output, asset
from pydantic import Field

from rlhf_assets.code_versions import step_code_version
from rlhf_assets.compute.backend import ComputeBackend
from rlhf_assets.compute.hardware import Hardware
from rlhf_assets.defs.data.datasets import JUDGE_SPLIT
from rlhf_assets.defs.data.snapshots import snapshot_key
from rlhf_assets.defs.step_runs import GPU_POOL, StepConfig, run_step_and_publish
from rlhf_assets.overrides import literal_enum, merged, override
from rlhf_assets.presets import DPOSpec, PPOSpec, Preset, RewardSpec, TrainSpec
from rlhf_assets.resources import ArtifactStoreResource, PresetResource
from rlhf_assets.step_contracts.models import BaseModelRequest, DPORequest, PolicyRequest, RewardRequest, SFTRequest
from rlhf_assets.storage import Manifest


class TrainOverrides(StepConfig):
    """Optional overrides of the preset's training settings, bounded like the preset's own fields."""

    epochs: float | None = override(TrainSpec, "epochs")
    learning_rate: float | None = override(TrainSpec, "learning_rate")
    max_train_rows: int | None = override(TrainSpec, "max_train_rows")
    save_steps: int | None = override(TrainSpec, "save_steps")
    force_memory_plan: bool = Field(default=False, description="Run even when the step's GPU memory plan says it "
                                    "will not fit (the plan is still logged)")


RewardMode = literal_enum(RewardSpec, "mode", "RewardMode",
                          "How `reward_model` gets its model: trained here, or a published trlx checkpoint.")


class RewardModelConfig(TrainOverrides):
    """Reward-model overrides: training settings and the mode."""

    mode: RewardMode | None = override(RewardSpec, "mode")  # type: ignore[valid-type]


@asset(code_version=step_code_version("base_model"), group_name="models", kinds={"pytorch"},
       ins={"model_snapshot": AssetIn(key=snapshot_key("base_model"))})
def base_model(
    context: AssetExecutionContext,
    config: StepConfig,
    preset: PresetResource,
    compute: ComputeBackend,
    artifacts: ArtifactStoreResource,
    preference_dataset: Manifest,
    model_snapshot: Manifest,
) -> Output[Manifest]:
    """The starting point of every trained model: the pinned hub checkpoint, or for `tiny` a BPE tokenizer fit on
    the training text and a freshly initialised small GPT-NeoX."""
    chosen = preset.get()
    request = BaseModelRequest(base_model=chosen.base_model, seed=chosen.sft.seed)
    return run_step_and_publish(context, config=config, request=request, preset=chosen,
                                inputs={"preference_dataset": preference_dataset, "model_snapshot": model_snapshot},
                                compute=compute, artifacts=artifacts)


@asset(code_version=step_code_version("sft"), group_name="models", kinds={"pytorch", "trl"}, pool=GPU_POOL)
def sft_model(
    context: AssetExecutionContext,
    config: TrainOverrides,
    preset: PresetResource,
    compute: ComputeBackend,
    artifacts: ArtifactStoreResource,
    base_model: Manifest,
    preference_dataset: Manifest,
) -> Output[Manifest]:
    """The SFT checkpoint: the base model fine-tuned on prompt + chosen with loss on the response (TRL SFTTrainer)."""
    chosen = preset.get()
    request = SFTRequest(train=merged(chosen.sft, config), force_memory_plan=config.force_memory_plan)
    return run_step_and_publish(context, config=config, request=request, preset=chosen,
                            inputs={"base_model": base_model, "preference_dataset": preference_dataset},
                            compute=compute, artifacts=artifacts)


def _reward_asset(name: str, train_split: str, spec_of: Callable[[Preset], RewardSpec], doc: str) -> AssetsDefinition:
    """A reward-model asset: the reward step from the SFT checkpoint on one split of the preference data."""

    @asset(name=name, code_version=step_code_version("reward"),
           group_name="models", kinds={"pytorch", "trl"}, pool=GPU_POOL,
           description=doc, ins={"reward_snapshot": AssetIn(key=snapshot_key("reward_model"))})
    def reward_asset(
        context: AssetExecutionContext,
        config: RewardModelConfig,
        preset: PresetResource,
        compute: ComputeBackend,
        artifacts: ArtifactStoreResource,
        sft_model: Manifest,
        preference_dataset: Manifest,
        reward_snapshot: Manifest,
    ) -> Output[Manifest]:
        chosen = preset.get()
        spec = merged(spec_of(chosen), config)
        request = RewardRequest(reward=spec, train_split=train_split, force_memory_plan=config.force_memory_plan)
        inputs = {"sft_model": sft_model, "preference_dataset": preference_dataset}
        if spec.mode == "pretrained":  # converting and scoring a published model: one GPU, not the training ranks
            inputs["reward_snapshot"] = reward_snapshot
        return run_step_and_publish(context, config=config, request=request, preset=chosen,
                                    inputs=inputs, compute=compute, artifacts=artifacts,
                                    hardware=Hardware.GPU if spec.mode == "pretrained" else None)

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


PolicyOptimizer = literal_enum(PPOSpec, "algorithm", "PolicyOptimizer",
                               "Which optimiser trains `ppo_policy`: ours (the recipe's PPO) or TRL's RLOO / GRPO.")


class PPOOverrides(StepConfig):
    """Optional overrides of the preset's PPO settings; the merged config is validated as a whole."""

    total_steps: int | None = override(PPOSpec, "config.total_steps")
    learning_rate: float | None = override(PPOSpec, "config.learning_rate")
    init_kl_coef: float | None = override(PPOSpec, "config.init_kl_coef")
    target: float | None = override(PPOSpec, "config.target")
    algorithm: PolicyOptimizer | None = override(PPOSpec, "algorithm")  # type: ignore[valid-type]
    seed: int | None = override(PPOSpec, "config.seed")
    force_memory_plan: bool = Field(default=False, description="Run even when the GPU memory plan says it will "
                                    "not fit (the plan is still logged)")


@asset(code_version=step_code_version("ppo"), group_name="models", kinds={"pytorch"}, pool=GPU_POOL)
def ppo_policy(
    context: AssetExecutionContext,
    config: PPOOverrides,
    preset: PresetResource,
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
    chosen = preset.get()
    request = PolicyRequest(ppo=merged(chosen.ppo, config), force_memory_plan=config.force_memory_plan)
    return run_step_and_publish(context, config=config, request=request, preset=chosen,
                            inputs={"sft_model": sft_model, "reward_model": reward_model,
                                    "preference_dataset": preference_dataset, "eval_prompts": eval_prompts},
                            compute=compute, artifacts=artifacts, reserved_processes=chosen.compute.reward_model_gpus)


DPOLoss = literal_enum(DPOSpec, "loss_type", "DPOLoss", "TRL's DPO losses this project offers.")


class DPOOverrides(TrainOverrides):
    """DPO overrides: training settings, β and the loss."""

    beta: float | None = override(DPOSpec, "beta")
    loss_type: DPOLoss | None = override(DPOSpec, "loss_type")  # type: ignore[valid-type]


@asset(code_version=step_code_version("dpo"), group_name="models", kinds={"pytorch", "trl"}, pool=GPU_POOL)
def dpo_policy(
    context: AssetExecutionContext,
    config: DPOOverrides,
    preset: PresetResource,
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
    chosen = preset.get()
    request = DPORequest(dpo=merged(chosen.dpo, config), force_memory_plan=config.force_memory_plan)
    return run_step_and_publish(context, config=config, request=request, preset=chosen,
                                inputs={"sft_model": sft_model, "preference_dataset": preference_dataset},
                                compute=compute, artifacts=artifacts)
