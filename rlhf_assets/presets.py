"""The presets: one named bundle of values for every size-dependent setting in the graph.

A preset is chosen by name once per run (the `preset` resource: `RLHF_PRESET`, or the launchpad), so a user
switches the whole graph from the offline CPU demo to the reference GPT-J recipe without touching code. The
schemas are in `specs.py` (re-exported here for the Dagster side); step programs import those, never this module,
so no step's code version changes with a preset's values.
"""

from __future__ import annotations

from rlhf_assets.ppo.config import PPOConfig
from rlhf_assets.specs import (
    PROJECT_ROOT,
    RTP_HUB_DATASET,
    SHARED_HH_PATH,
    SHARED_RTP_DIR,
    BaseModelSpec,
    ComputeSpec,
    DataSpec,
    DPOSpec,
    EvalSpec,
    GenerationSpec,
    HumanEvalSpec,
    NonInferiorityMargins,
    PPOSpec,
    Preset,
    RewardSpec,
    StandInToxicitySpec,
    ToxicitySpec,
    TrainSpec,
    check_heldout_unseen,
)

__all__ = [
    "BaseModelSpec",
    "ComputeSpec",
    "DPOSpec",
    "DataSpec",
    "EvalSpec",
    "GenerationSpec",
    "HumanEvalSpec",
    "NonInferiorityMargins",
    "PPOSpec",
    "PROJECT_ROOT",
    "Preset",
    "RTP_HUB_DATASET",
    "RewardSpec",
    "SHARED_HH_PATH",
    "SHARED_RTP_DIR",
    "StandInToxicitySpec",
    "ToxicitySpec",
    "TrainSpec",
    "check_heldout_unseen",
    "PRESETS",
    "get_preset",
    "TINY",
    "SMALL",
    "GPTJ_6B",
]

TINY = Preset(
    name="tiny",
    description="Offline CPU demo: BPE tokenizer trained on the data, ~1.4M-parameter GPT-NeoX.",
    data=DataSpec(source=str(SHARED_HH_PATH), judge_fraction=0.2),
    base_model=BaseModelSpec(),
    sft=TrainSpec(epochs=1.0, learning_rate=1e-3, batch_size=16, max_length=192, max_response_tokens=96,
                  gradient_checkpointing=False),
    reward=RewardSpec(epochs=1.0, learning_rate=5e-4, batch_size=16, max_length=192, max_response_tokens=96,
                      eval_rows=1000, gradient_checkpointing=False),
    judge=RewardSpec(epochs=1.0, learning_rate=5e-4, batch_size=16, max_length=192, max_response_tokens=96,
                     eval_rows=1000, gradient_checkpointing=False),
    ppo=PPOSpec(
        config=PPOConfig(seq_length=160, max_new_tokens=32, batch_size=16, total_steps=48, num_layers_unfrozen=-1,
                         learning_rate=5e-4, lr_min=5e-5, num_rollouts=64, chunk_size=32, ppo_epochs=2,
                         init_kl_coef=0.05, target=6.0, horizon=10000, checkpoint_interval=8, top_k=0, seed=1000),
        kl_bound=8.0, eval_max_new_tokens=32,
    ),
    # 640 of the 1,630 training pairs keep DPO under 2 minutes here (2 s per step of 16 pairs: policy and
    # reference forwards on chosen and rejected); held-out accuracy 0.58 [0.52, 0.64], the reward model's 0.59.
    dpo=DPOSpec(epochs=1.0, learning_rate=5e-4, batch_size=16, max_length=192, max_response_tokens=96,
                max_train_rows=640, eval_rows=1000, beta=0.1, gradient_checkpointing=False),
    # The 2-minute tiny policy answers in fragments (a fifth of its replies are ≤ 2 words): the short-reply
    # bound is relaxed here, stated in the check's metadata, so the smoke test still evaluates it.
    # 1.4M-parameter models write fragments: a few wordless or very short replies in 100 are expected, and the
    # Wilson upper bound of 2 in 100 is 7%.
    evaluation=EvalSpec(generation=GenerationSpec(max_new_tokens=32, prompt_tokens=128, batch_size=32),
                        max_short_share=0.3, max_empty_share=0.1),
    toxicity=ToxicitySpec(
        source=str(SHARED_RTP_DIR), num_prompts=200, samples_per_prompt=2, scorer="train_standin",
        generation=GenerationSpec(max_new_tokens=20, top_p=0.9, stop_sequences=(), batch_size=64, prompt_tokens=128),
    ),
    compute=ComputeSpec(),
)

SMALL = Preset(
    name="small",
    description="A real run on one GPU: Pythia-160M policy and a reward model trained with TRL.",
    data=DataSpec(source="Dahoas/rm-static", heldout_split="test", test_fraction=0.5),
    base_model=BaseModelSpec(hub_id="EleutherAI/pythia-160m"),
    sft=TrainSpec(epochs=1.0, learning_rate=1e-5, batch_size=8, max_length=512, max_response_tokens=128,
                  eval_rows=1000, logging_steps=50, save_steps=500, bf16=True),
    reward=RewardSpec(epochs=1.0, learning_rate=1e-5, batch_size=8, max_length=512, max_response_tokens=128,
                      eval_rows=1000, logging_steps=50, save_steps=500, bf16=True),
    judge=RewardSpec(epochs=1.0, learning_rate=1e-5, batch_size=8, max_length=512, max_response_tokens=128,
                     eval_rows=1000, logging_steps=50, save_steps=500, bf16=True),
    ppo=PPOSpec(
        config=PPOConfig(seq_length=512, max_new_tokens=128, batch_size=8, total_steps=2000, num_layers_unfrozen=2,
                         learning_rate=1e-5, lr_min=1e-6, num_rollouts=64, chunk_size=16, checkpoint_interval=200),
        kl_bound=20.0,
    ),
    dpo=DPOSpec(epochs=1.0, learning_rate=1e-6, batch_size=8, max_length=512, max_response_tokens=128,
                eval_rows=1000, logging_steps=50, save_steps=500, bf16=True),
    evaluation=EvalSpec(generation=GenerationSpec(prompt_tokens=384)),
    toxicity=ToxicitySpec(),
    compute=ComputeSpec(instance_type="ml.g5.2xlarge", inference_instance_type="ml.g5.2xlarge"),
)

GPTJ_6B = Preset(
    name="gptj_6b",
    description="The reference recipe: GPT-J-6B on ml.p4d.24xlarge, ZeRO-2 bf16, Dahoas/gptj-rm-static.",
    # Test, judge and eval prompts come from rm-static's `test` split (5,103 pairs, half each to test and judge):
    # Dahoas/gptj-rm-static trained on all of `train` (reward-modeling configs/rm_configs/gptj.yaml).
    data=DataSpec(source="Dahoas/rm-static", heldout_split="test", test_fraction=0.5),
    base_model=BaseModelSpec(hub_id="EleutherAI/gpt-j-6b"),
    sft=TrainSpec(epochs=1.0, learning_rate=1e-5, batch_size=2, gradient_accumulation_steps=4,
                  max_length=1024, max_response_tokens=256, eval_rows=1000, logging_steps=50,
                  save_steps=500, bf16=True),
    reward=RewardSpec(mode="pretrained", pretrained_id="Dahoas/gptj-rm-static",
                      pretrained_trunk="EleutherAI/gpt-j-6b", pretrained_training_data=("Dahoas/rm-static:train",),
                      max_length=1024, max_response_tokens=256,
                      eval_rows=1000, bf16=True),
    # The judge is trained from the SFT GPT-J on the judge half of rm-static's `test` split, which neither
    # Dahoas/gptj-rm-static nor our SFT model saw; PPO is optimised against the former, never against the judge.
    judge=RewardSpec(epochs=1.0, learning_rate=1e-5, batch_size=8, max_length=1024, max_response_tokens=256,
                     eval_rows=1000, logging_steps=50, save_steps=500, bf16=True),
    ppo=PPOSpec(config=PPOConfig(), kl_bound=20.0, reward_batch_size=8),
    # The policy and a frozen GPT-J reference (bf16) per GPU under ZeRO-2, as the PPO step's full-copy reference.
    dpo=DPOSpec(epochs=1.0, learning_rate=5e-7, batch_size=1, gradient_accumulation_steps=8, max_length=1024,
                max_response_tokens=256, eval_rows=1000, logging_steps=50, save_steps=500, bf16=True),
    evaluation=EvalSpec(generation=GenerationSpec(prompt_tokens=896, batch_size=8)),
    toxicity=ToxicitySpec(),
    # Sampling and scoring hold two GPT-J copies in bf16 (policy and SFT reference, or judge and reward model
    # one after the other): one 80 GB A100 of a p4d would do, but SageMaker rents whole instances; an
    # ml.g6e.xlarge (one 48 GB L40S) holds both.
    compute=ComputeSpec(backend="sagemaker", num_processes=8, reward_model_gpus=1, instance_type="ml.p4d.24xlarge",
                        inference_instance_type="ml.g6e.xlarge",
                        accelerate_config="rlhf_assets/compute/accelerate/zero2_bf16.yaml"),
)

PRESETS: dict[str, Preset] = {p.name: p for p in (TINY, SMALL, GPTJ_6B)}


def get_preset(name: str) -> Preset:
    """Look a preset up by name so a typo fails before any work starts, listing the valid names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}: choose one of {', '.join(sorted(PRESETS))}") from None
