"""PPO hyperparameters with the recipe's defaults (trlx `examples/hh/ppo_hh.py`, GPT-J-6B)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

RECIPE_STOP_SEQUENCES = ("Human:", "human:", "Assistant:", "assistant:")


class SamplingSettings(BaseModel):
    """How a response is sampled. PPO's rollouts (`PPOConfig`) and the evaluation (`specs.GenerationSpec`) both
    extend it, so each setting has one name, one bound and one description wherever a response is drawn."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_new_tokens: int = Field(128, ge=1, description="Longest response sampled")
    top_k: int = Field(0, ge=0, description="0 disables top-k")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass (1: off)")
    temperature: float = Field(1.0, gt=0.0, description="Sampling temperature")
    stop_sequences: tuple[str, ...] = Field(RECIPE_STOP_SEQUENCES, description="A response ends before the first "
                                            "of these (the recipe: the next dialogue turn)")

    def sampling(self, **changes: int | float | tuple[str, ...]) -> SamplingSettings:
        """Only the sampling settings (with `changes`), to start another sampler from these: PPO's evaluation
        samples as its rollouts did, with its own response length."""
        return SamplingSettings(**{name: getattr(self, name) for name in SamplingSettings.model_fields} | changes)


class PPOConfig(SamplingSettings):
    """Every knob of the PPO loop (the rollouts' sampling settings included); defaults are the reference recipe's,
    presets scale them down."""

    seq_length: int = Field(1024, ge=8, description="Prompt + response tokens; longer prompts are cut on the left")
    max_prompt_tokens: int | None = Field(None, ge=1, description="Prompt budget (seq_length − max_new_tokens)")
    truncate_prompts: bool = Field(
        True, description="Cut prompts over the budget from the left (as trlx does); False refuses them instead"
    )
    batch_size: int = Field(4, ge=1, description="Samples per optimizer step")
    total_steps: int = Field(10000, ge=1, description="Optimizer steps in the whole run")
    num_layers_unfrozen: int = Field(2, ge=-1, description="Top transformer layers trained; -1 trains all")
    hydra_reference: bool = Field(
        True, description="With 0 < num_layers_unfrozen, the reference is a frozen copy of only the trained top "
        "layers + norm + head fed the policy's hidden state (trlx's hydra); False keeps a full frozen copy")
    lora_rank: int = Field(0, ge=0, description="LoRA rank; 0 trains the (unfrozen) weights themselves")
    lora_alpha: float = Field(16.0, gt=0, description="LoRA scaling numerator (alpha / rank)")
    learning_rate: float = Field(8e-6, gt=0, description="AdamW peak learning rate (cosine-annealed to lr_min)")
    betas: tuple[float, float] = Field((0.9, 0.95), description="AdamW β1, β2 (the recipe's 0.9, 0.95)")
    eps: float = Field(1e-8, gt=0, description="AdamW ε added to the second-moment root")
    weight_decay: float = Field(1e-6, ge=0, description="AdamW decoupled weight decay")
    lr_min: float = Field(8e-6, ge=0, description="Cosine schedule floor (eta_min)")
    num_rollouts: int = Field(64, ge=1, description="Samples collected before each PPO phase")
    chunk_size: int = Field(16, ge=1, description="Prompts generated per batch while collecting rollouts")
    ppo_epochs: int = Field(4, ge=1, description="Passes over each rollout batch")
    init_kl_coef: float = Field(0.05, ge=0, description="Initial β of the KL penalty")
    target: float | None = Field(6.0, gt=0, description="KL target of the adaptive controller; None: fixed β")
    horizon: int = Field(10000, ge=1, description="Adaptive KL controller horizon (Ziegler et al.): each update "
                         "multiplies β by 1 + clip(KL / target − 1, ±0.2) · samples / horizon")
    advantage_whitening: Literal["minibatch", "phase"] = Field(
        "minibatch", description="minibatch: trlx's (per minibatch, every position of its padded response tensor, "
        "statistics over all ranks); phase: once per rollout phase over response tokens only")
    gamma: float = Field(1.0, ge=0, le=1, description="Discount of future per-token rewards in GAE (1: none)")
    lam: float = Field(0.95, ge=0, le=1, description="GAE λ: 0 uses one-step TD errors, 1 Monte Carlo returns")
    cliprange: float = Field(0.2, gt=0, description="PPO policy-ratio clip ε: the ratio is clipped to [1−ε, 1+ε]")
    cliprange_value: float = Field(0.2, gt=0, description="Value predictions may move at most this far from "
                                   "the rollout's values per phase (clipped value loss)")
    vf_coef: float = Field(1.0, ge=0, description="Weight of the value loss beside the policy loss")
    scale_reward: Literal["running", "ref", "none"] = Field(
        "running", description="Reward scaling before the KL penalty: running divides by a running std of scores "
        "(the recipe), ref by ref_std, none leaves scores as they are")
    ref_std: float | None = Field(
        None, gt=0, description="Score std used when scale_reward='ref'; None: the first chunk's, as trlx")
    cliprange_reward: float = Field(10.0, ge=0, description="Raw RM scores are clipped to ±this before scaling")
    delta_reward: bool = Field(True, description="Reward = RM(prompt+sample) − RM(prompt+chosen), as the recipe")
    checkpoint_interval: int = Field(100, ge=1, description="Optimizer steps between checkpoints")
    curve_points: int = Field(4, ge=0, description="Policy snapshots (trainable weights) kept at evenly spaced steps "
                              "for the reward over-optimisation curve; 0: none")
    max_grad_norm: float | None = Field(1.0, gt=0, description="Gradient norm clip; None: no clipping")
    seed: int = Field(1000, description="Seed of value-head init, prompt order and rollout sampling")

    @model_validator(mode="after")
    def _consistent(self) -> PPOConfig:
        if self.chunk_size > self.num_rollouts:
            raise ValueError(f"chunk_size ({self.chunk_size}) must not exceed num_rollouts ({self.num_rollouts})")
        if self.batch_size > self.num_rollouts:
            raise ValueError(f"batch_size ({self.batch_size}) must not exceed num_rollouts ({self.num_rollouts})")
        if self.max_new_tokens >= self.seq_length:
            raise ValueError(f"max_new_tokens ({self.max_new_tokens}) must be below seq_length ({self.seq_length})")
        return self

    @property
    def reference_kind(self) -> Literal["adapters_off", "hydra", "full_copy"]:
        """How the frozen SFT reference is held: LoRA's disabled adapters, a hydra branch, or a whole copy."""
        if self.lora_rank:
            return "adapters_off"
        if self.hydra_reference and self.num_layers_unfrozen > 0:
            return "hydra"
        return "full_copy"

    @property
    def prompt_budget(self) -> int:
        return self.max_prompt_tokens or self.seq_length - self.max_new_tokens
