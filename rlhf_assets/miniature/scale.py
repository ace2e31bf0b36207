"""The miniature of a preset: the same preset with only sizes shrunk.

Everything that decides *what* runs stays the preset's: the models and datasets it names (served by the mirror
at toy size), backend, accelerate config, precision, reward mode, split, lengths, sampling settings, scorer and
file formats. What shrinks is how much: rows, prompts, steps, rollouts, batch sizes, response lengths, and the
number of processes (two ranks stand in for the recipe's eight, so the multi-process launch still runs; with no
GPU, none is set aside for the reward model). `RLHF_MINIATURE=1` (or the
launchpad's `preset: config: miniature: true`) selects it for a run.
"""

from __future__ import annotations

from typing import Any

from rlhf_assets.specs import Preset, TrainSpec

ROWS = 24  # training pairs per trained model
EVAL_ROWS = 16  # held-out pairs scored
EVAL_PROMPTS = 6  # prompts of the policy comparison (the recipe: 100)
TOXICITY_PROMPTS = 6  # RealToxicityPrompts prompts (the recipe: 1,000)
PROCESSES = 2  # ranks of a multi-process step (the recipe: 8 GPUs)


def _train(spec: TrainSpec) -> dict[str, Any]:
    batch = min(spec.batch_size, 4)
    return {**spec.model_dump(), "max_train_rows": ROWS, "eval_rows": EVAL_ROWS, "batch_size": batch,
            "logging_steps": 1, "save_steps": max(1, ROWS // batch // 2)}


def miniature(preset: Preset) -> Preset:
    """`preset` with its sizes shrunk to run on a CPU in about a minute per graph; validated like any preset."""
    ppo = preset.ppo.model_dump()
    ppo["config"].update(total_steps=2, num_rollouts=4, chunk_size=4, batch_size=2, ppo_epochs=1,
                         checkpoint_interval=1, max_new_tokens=min(ppo["config"]["max_new_tokens"], 24))
    ppo.update(num_generations=2, eval_max_new_tokens=min(ppo["eval_max_new_tokens"], 24),
               reward_batch_size=min(ppo["reward_batch_size"], 4))
    evaluation = preset.evaluation.model_dump()
    evaluation["generation"].update(max_new_tokens=min(evaluation["generation"]["max_new_tokens"], 24))
    toxicity = preset.toxicity.model_dump()
    toxicity.update(num_prompts=TOXICITY_PROMPTS, samples_per_prompt=1)
    toxicity["standin"].update(epochs=1, degenerate_negatives=20)
    compute = preset.compute.model_dump()
    # No GPU to set aside for the reward model on a CPU: PPO keeps every rank (the reward model runs in the main
    # process, as it does on the spare GPU), so its DeepSpeed launch still runs on two ranks.
    compute.update(num_processes=min(compute["num_processes"], PROCESSES), reward_model_gpus=0)
    data = {**preset.data.model_dump(), "eval_prompt_count": EVAL_PROMPTS}
    base = preset.base_model.model_dump()
    base.update(tokenizer_train_rows=min(base["tokenizer_train_rows"], 500))
    return Preset.model_validate({
        **preset.model_dump(), "description": f"{preset.description} (miniature: sizes shrunk, offline)",
        "miniature": True, "data": data, "base_model": base, "sft": _train(preset.sft),
        "reward": _train(preset.reward), "judge": _train(preset.judge), "dpo": _train(preset.dpo), "ppo": ppo,
        "evaluation": evaluation, "toxicity": toxicity, "compute": compute,
    })
