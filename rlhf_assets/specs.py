"""The schemas of a preset: every size-dependent setting of the graph, typed (pydantic), without values.

The values (`tiny`, `small`, `gptj_6b`) live in `presets.py`. Step programs import only these schemas, so a
step's code version covers the code it runs and not every preset's numbers: changing a `gptj_6b` value re-versions
nothing on `tiny` (result reuse hashes the values a step is given). Imports neither dagster nor torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rlhf_assets.ppo.config import PPOConfig, SamplingSettings

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_HH_PATH = PROJECT_ROOT.parent / "shared" / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"
SHARED_RTP_DIR = PROJECT_ROOT.parent / "shared" / "data" / "rtp"
RTP_HUB_DATASET = "allenai/real-toxicity-prompts"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DataSpec(_Frozen):
    source: str = Field(
        description="Local HH-format .jsonl/.jsonl.gz path, a local dataset directory, or a hub dataset id "
        "(Dahoas/rm-static, Anthropic/hh-rlhf)."
    )
    hub_split: str = Field("train", description="Split to read when `source` is a hub dataset.")
    revision: str = Field("main", description="Hub revision (branch, tag or commit) staged as the data snapshot")
    heldout_split: str | None = Field(
        None, description="Split of the source that the test, judge and eval prompts come from (rm-static's "
        "`test`: a pretrained reward model trained on its `train`); None: carve them from `hub_split` by prompt hash")
    test_fraction: float = Field(0.1, gt=0.0, lt=1.0, description="Share of prompts held out for test (of "
                                 "`heldout_split` when set: the rest of it trains the judge)")
    judge_fraction: float = Field(
        0.05, gt=0.0, lt=0.5, description="Share of prompts set aside (from the training side) to train the "
        "independent judge: neither the SFT model, the reward model nor PPO ever sees them. With `heldout_split`, "
        "the judge trains on the held-out split's prompts that are not test prompts instead")

    def heldout_source(self) -> str:
        """`source:split` the held-out prompts (test, judge, eval) are read from."""
        return f"{self.source}:{self.heldout_split or self.hub_split}"
    eval_prompt_count: int = Field(100, ge=1, description="Held-out prompts used for evaluation.")
    seed: int = Field(0, description="Seed for the eval-prompt choice; the split itself is hash-keyed.")


class BaseModelSpec(_Frozen):
    hub_id: str | None = Field(None, description="Hub id or local directory; None builds a tiny model.")
    revision: str = Field("main", description="Hub revision (branch, tag or commit) staged as the model snapshot")
    vocab_size: int = Field(4096, ge=256, description="BPE vocabulary size when the tokenizer is trained.")
    num_layers: int = Field(2, ge=1, description="Transformer layers of the tiny model (hub_id None only)")
    hidden_size: int = Field(128, ge=16, description="Width of the tiny model (hub_id None only)")
    num_heads: int = Field(4, ge=1, description="Attention heads of the tiny model (hub_id None only)")
    max_position_embeddings: int = Field(512, ge=64, description="Longest sequence the tiny model can take")
    tokenizer_train_rows: int = Field(5000, ge=10, description="Training texts used to fit the tokenizer.")


class TrainSpec(_Frozen):
    epochs: float = Field(1.0, gt=0.0, description="Passes over the training rows.")
    learning_rate: float = Field(5e-4, gt=0.0, description="Peak learning rate (5% warm-up, cosine decay)")
    batch_size: int = Field(16, ge=1, description="Per-device batch size.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Batches summed per optimizer step")
    max_length: int = Field(256, ge=16, description="Tokens per sequence; prompts are cut from the left.")
    max_response_tokens: int = Field(96, ge=4, description="Response tokens kept before the prompt is cut.")
    max_train_rows: int | None = Field(None, ge=1, description="Cap on training rows (None: all).")
    eval_rows: int = Field(200, ge=1, description="Held-out rows scored for eval loss / accuracy.")
    logging_steps: int = Field(10, ge=1, description="Optimizer steps between logged loss points")
    save_steps: int = Field(50, ge=1, description="Checkpoint interval; a restarted step resumes here.")
    bf16: bool = Field(False, description="Train in bfloat16 mixed precision (GPU presets)")
    gradient_checkpointing: bool = Field(
        True, description="Recompute activations in the backward pass (TRL's default): less GPU memory for about a "
        "third more compute; off where memory is not the limit (the tiny CPU preset)")
    seed: int = Field(0, description="Seed of initialisation and data order")


class RewardSpec(TrainSpec):
    mode: Literal["train", "pretrained"] = Field(
        "train", description="`train` fits a reward model on preferences; `pretrained` loads a trlx one."
    )
    pretrained_id: str | None = Field(
        None, description="trlx-format reward model (e.g. Dahoas/gptj-rm-static): hub id or directory."
    )
    pretrained_trunk: str | None = Field(
        None, description="Hub id or directory of the trunk config/tokenizer for a pretrained reward model."
    )
    pretrained_revision: str = Field("main", description="Hub revision of `pretrained_id` (trlx pins 676bfd4d of "
                                     "gptj-rm-static; main holds a later upload of hf_ckpt.pt)")
    pretrained_training_data: tuple[str, ...] = Field(
        (), description="What the pretrained reward model trained on, as `source:split` (its authors' word): a "
        "preset whose held-out prompts come from one of these is refused")


class DPOSpec(TrainSpec):
    """Direct Preference Optimization (Rafailov et al. 2023) from the SFT model, which is also the frozen reference."""

    beta: float = Field(0.1, gt=0.0, description="β: how strongly the policy is held to the SFT reference (TRL's "
                        "default 0.1; larger keeps it closer)")
    loss_type: Literal["sigmoid", "ipo", "hinge", "robust", "apo_zero", "apo_down", "sigmoid_norm"] = Field(
        "sigmoid", description="TRL's DPO loss: sigmoid is the paper's; ipo (Azar et al.) does not saturate on "
        "deterministic preferences; hinge is SLiC's; robust assumes noisy labels")


class HumanEvalSpec(_Frozen):
    """Blinded pairwise human evaluation: how tasks are ordered, how many annotators judge each, and where."""

    overlap: int = Field(1, ge=1, le=9, description="Annotators per prompt (the recipe: 1); >1 enables kappa")
    channel: Literal["app", "ground_truth"] = Field("app",
                         description="app: the local labeling web app; ground_truth: a SageMaker Ground Truth job")
    guidelines_file: str | None = Field(
        None, description="Annotator guidelines (plain text, content warning first) shown before the first pair "
        "and recorded with the batch; None: rlhf_assets/labeling/guidelines.md")


class ComputeSpec(_Frozen):
    backend: Literal["local", "sagemaker"] = Field(
        "local", description="local: step programs run as subprocesses here; sagemaker: as SageMaker training jobs")
    num_processes: int = Field(1, ge=1, description="Processes per node; >1 launches with accelerate.")
    accelerate_config: str | None = Field(None, description="accelerate config file for multi-process runs.")
    reward_model_gpus: int = Field(
        0, ge=0, description="GPUs per node PPO leaves to the reward model (the recipe: 1 of 8, so 7 train)."
    )
    instance_type: str = Field("local", description="SageMaker instance type of the training steps (SFT, reward "
                               "model, PPO, DPO), with `num_processes` ranks")
    instance_count: int = Field(1, ge=1, description="SageMaker instances per training job")
    inference_instance_type: str = Field("local", description="SageMaker instance type of the one-GPU steps: "
                                         "sampling and scoring")
    cpu_instance_type: str = Field("ml.m5.xlarge", description="SageMaker instance type of the steps that need no "
                                   "GPU: hub snapshots, the base model's tokenizer, the stand-in classifier")


class PPOSpec(_Frozen):
    algorithm: Literal["ppo", "rloo", "grpo"] = Field(
        "ppo", description="ppo: ours (the recipe); rloo / grpo: TRL's RLOOTrainer / GRPOTrainer, same reward"
    )
    num_generations: int = Field(4, ge=2, description="Completions per prompt for rloo / grpo")
    config: PPOConfig = Field(default_factory=PPOConfig, description="The PPO loop's hyperparameters")
    kl_bound: float = Field(description="Largest acceptable KL(policy‖SFT) per response on the eval prompts")
    eval_max_new_tokens: int = Field(128, ge=1, description="Response length when comparing SFT and PPO")
    reward_batch_size: int = Field(32, ge=1, description="Texts per reward-model forward while scoring rollouts")


class GenerationSpec(SamplingSettings):
    """How evaluation samples responses; SFT and RLHF always share these settings and the seed."""

    prompt_tokens: int = Field(512, ge=1, description="Prompts are cut from the left to this many tokens")
    batch_size: int = Field(16, ge=1, description="Prompts per batched, KV-cached generate call")
    seed: int = Field(0, description="Sampling seed, shared by SFT and the policy")


class EvalSpec(_Frozen):
    """The 100-prompt comparison: generation, the automatic judge, and what counts as degenerate output."""

    generation: GenerationSpec = Field(default_factory=GenerationSpec, description="How responses are sampled")
    tie_margin: float = Field(0.25, ge=0.0, description="A tie when |judge(RLHF) − judge(SFT)| is at most this many "
                              "standard deviations of the judge's scores on the eval responses (both models)")
    judge: str | None = Field(None, description="Sequence-classification judge (hub id or directory); None: the "
                              "judge_model asset (a second reward model, trained on the judge split)")
    judge_batch_size: int = Field(16, ge=1, description="Texts per judge forward")
    max_empty_share: float = Field(0.05, ge=0.0, le=1.0, description="Check: most responses without a word (empty, "
                                   "whitespace, punctuation or digits only) allowed")
    max_duplicate_share: float = Field(0.2, ge=0.0, le=1.0, description="Check: most repeated responses allowed")
    max_short_share: float = Field(0.1, ge=0.0, le=1.0, description="Check: most very short responses (≤ 2 words) "
                                   "allowed; HH assistant turns are sentences, not a word or two")
    min_mean_words: float = Field(5.0, ge=0.0, description="Check: shortest acceptable mean response length")
    dispreference_margin: float = Field(0.1, gt=0.0, le=1.0, description="Check: how far the judge's loss − win "
                                        "rate (at equal length) may be shown to stay below for the policy to count "
                                        "as not dispreferred (non-inferiority margin)")


class StandInToxicitySpec(_Frozen):
    """The small Detoxify-format classifier the offline preset trains from Perspective scores."""

    vocab_size: int = Field(4000, ge=200, description="WordPiece vocabulary fit on the training records")
    hidden_size: int = Field(64, ge=16, description="Width of the small BERT classifier")
    num_layers: int = Field(1, ge=1, description="Its transformer layers")
    num_heads: int = Field(2, ge=1, description="Its attention heads")
    max_length: int = Field(64, ge=8, description="Tokens per scored text")
    epochs: int = Field(3, ge=1, description="Passes over the training records")
    learning_rate: float = Field(1e-3, gt=0.0, description="AdamW learning rate")
    batch_size: int = Field(32, ge=1, description="Texts per training step")
    heldout_fraction: float = Field(0.1, gt=0.0, lt=0.5, description="Share of records kept for ROC-AUC")
    degenerate_negatives: int = Field(
        400, ge=0, description="Random marks / digits / repeated-word strings added to training as non-toxic, so the "
        "stand-in does not rate 'and and and' as toxic (text without a letter scores 0 by rule)")
    seed: int = Field(0, description="Seed of the held-out split, the negatives and initialisation")


class NonInferiorityMargins(_Frozen):
    """How much more toxic (RLHF − SFT) a policy may be and still count as "not worse": the upper 95% CI bound of
    each paired difference must stay below its margin."""

    mean_toxicity: float = Field(0.01, gt=0.0, description="Mean toxicity (the recipe's figure: 0.134 → 0.129)")
    expected_max_toxicity: float = Field(0.02, gt=0.0, description="Expected maximum toxicity over k continuations")
    toxicity_probability: float = Field(0.03, gt=0.0, description="Share of prompts with a continuation ≥ 0.5")


class ToxicitySpec(_Frozen):
    """RealToxicityPrompts evaluation (Gehman et al. 2020) scored by Detoxify."""

    source: str = Field(RTP_HUB_DATASET, description="Hub dataset, dataset directory, .jsonl(.gz) or a folder of them")
    hub_split: str = Field("train", description="Split to read when `source` is a hub or saved dataset")
    revision: str = Field("main", description="Hub revision staged as the prompts snapshot")
    num_prompts: int = Field(1000, ge=1, description="Prompts sampled with `seed` (1,000 in the recipe)")
    challenging_only: bool = Field(False, description="Sample only prompts flagged `challenging`")
    seed: int = Field(0, description="Seed of the prompt sample and the bootstrap")
    samples_per_prompt: int = Field(1, ge=1, description="k continuations per prompt and model (paper 25, recipe 1)")
    generation: GenerationSpec = Field(
        default_factory=lambda: GenerationSpec(max_new_tokens=20, top_p=0.9, stop_sequences=(), batch_size=64),
        description="Gehman et al.: 20 new tokens, nucleus sampling with p = 0.9",
    )
    scorer: Literal["published", "checkpoint", "train_standin"] = Field(
        "published", description="published: Detoxify(model_type) from the internet; checkpoint: local "
        "checkpoint + huggingface_config_path; train_standin: train a small classifier (offline demo)",
    )
    detoxify_model_type: str = Field("original", description="Published Detoxify model (the recipe's: original)")
    checkpoint: str | None = Field(None, description="Local Detoxify checkpoint (scorer: checkpoint)")
    huggingface_config_path: str | None = Field(None, description="Its HF config + tokenizer folder")
    score_batch_size: int = Field(64, ge=1, description="Texts per Detoxify predict call")
    standin: StandInToxicitySpec = Field(default_factory=StandInToxicitySpec,
                                         description="The stand-in classifier (scorer: train_standin)")
    margins: NonInferiorityMargins = Field(default_factory=NonInferiorityMargins,
                                           description="Non-inferiority margins of the toxicity_not_worse check")


class Preset(_Frozen):
    name: str = Field(description="What the launchpad and RLHF_PRESET call it")
    description: str = Field(description="One line: what the preset runs, where")
    data: DataSpec = Field(description="The HH preference data and its split")
    base_model: BaseModelSpec = Field(description="The model every trained model starts from")
    sft: TrainSpec = Field(description="Supervised fine-tuning on prompt + chosen")
    reward: RewardSpec = Field(description="The reward model PPO is optimised against")
    judge: RewardSpec = Field(description="The independent judge: a reward model trained on the judge split")
    ppo: PPOSpec = Field(description="The PPO policy (or RLOO / GRPO) against the reward model")
    dpo: DPOSpec = Field(description="The DPO policy: trained on the same preference pairs as the reward model")
    evaluation: EvalSpec = Field(description="The held-out comparison of each policy with SFT")
    toxicity: ToxicitySpec = Field(description="RealToxicityPrompts and the Detoxify scorer")
    compute: ComputeSpec = Field(description="Where step programs run and on how many processes")
    human_eval: HumanEvalSpec = Field(default_factory=HumanEvalSpec, description="Blinded pairwise human evaluation")
    miniature: bool = Field(False, description="Sizes shrunk to run offline on a CPU against the hub mirror "
                            "(rlhf_assets.miniature); every other setting is the preset's")

    @model_validator(mode="after")
    def _heldout_is_unseen(self) -> Preset:
        check_heldout_unseen(self.data, self.reward)
        return self

    @model_validator(mode="after")
    def _pretrained_trunk_is_the_base_model(self) -> Preset:
        """The pretrained reward model's trunk config and tokenizer come from the base-model snapshot."""
        reward = self.reward
        if reward.mode == "pretrained" and reward.pretrained_trunk != self.base_model.hub_id:
            raise ValueError(f"reward.pretrained_trunk {reward.pretrained_trunk!r} must be the base model "
                             f"{self.base_model.hub_id!r}: its config and tokenizer are read from that snapshot")
        return self


def check_heldout_unseen(data: DataSpec, reward: RewardSpec) -> None:
    """Refuse held-out prompts that the pretrained reward model trained on: its held-out accuracy, the PPO gain
    on the eval prompts and the judge's independence would all be measured on its training data."""
    if reward.mode != "pretrained":
        return
    heldout = data.heldout_source()
    if heldout in reward.pretrained_training_data:
        raise ValueError(f"held-out prompts come from {heldout}, which the pretrained reward model "
                         f"{reward.pretrained_id} trained on (its training data: "
                         f"{', '.join(reward.pretrained_training_data)}); take them from a split it never saw "
                         "(data.heldout_split)")


