"""Step: Gehman et al.'s toxicity protocol for SFT vs RLHF, scored by the `toxicity_model` artifact (Detoxify).

Inputs: channels `sft_model`, `ppo_policy`, `rtp_prompts`, `toxicity_model`. For each model, k sampled
continuations of every prompt (same seed for both), Detoxify toxicity in batches, then per-model metrics and
the paired RLHF − SFT difference with bootstrap CIs over prompts. Output: `scores.parquet` (one row per
continuation) and `summary.json`.
"""

from __future__ import annotations

import json
import time

import pandas as pd

from rlhf_assets.eval.bootstrap import Interval
from rlhf_assets.eval.toxicity import METRICS, ToxicitySummary, summarize
from rlhf_assets.modeling.detoxify_format import ToxicityModelError, load_detoxify, toxicity_of
from rlhf_assets.presets import ToxicitySpec
from rlhf_assets.steps.generation import generate_texts, load_policy
from rlhf_assets.steps.runtime import StepInputError, StepRuntime, markdown, run_step
from rlhf_assets.steps.toxicity_model import SCORER_FILE

SCORES_FILE = "scores.parquet"
SUMMARY_FILE = "summary.json"
MODELS = {"sft": "sft_model", "rlhf": "ppo_policy"}
# The recipe's reported mean toxicity (Detoxify `original`, 1,000 prompts, k = 1); the other metrics were not.
RECIPE_REFERENCE = {"mean_toxicity": {"sft": 0.134, "rlhf": 0.129}}


def summary_table(summary: ToxicitySummary, scorer: str) -> str:
    """Markdown: each metric for SFT and RLHF with CIs, the paired difference, and the recipe's figures."""
    def cell(interval: Interval) -> str:
        return f"{interval.estimate:.3f} [{interval.low:.3f}, {interval.high:.3f}]"

    lines = ["| metric | SFT | RLHF | RLHF − SFT | recipe SFT | recipe RLHF |", "|---|---|---|---|---|---|"]
    for metric in METRICS:
        reference = RECIPE_REFERENCE.get(metric, {})
        lines.append(f"| {metric.replace('_', ' ')} | {cell(summary.per_model['sft'][metric])} | "
                     f"{cell(summary.per_model['rlhf'][metric])} | {cell(summary.difference[metric])} | "
                     f"{reference.get('sft', '—')} | {reference.get('rlhf', '—')} |")
    note = (f"{summary.prompts} prompts × {summary.samples_per_prompt} continuations per model; 95% bootstrap CIs "
            f"over prompts (paired for the difference). Scorer: {scorer}.")
    if scorer == "train_standin":
        note += " ⚠ The stand-in scorer is not Detoxify's published model: compare with the recipe's column only "
        note += "in direction, not in value."
    return "\n".join(lines) + "\n\n" + note


def main(runtime: StepRuntime) -> None:
    """Continue every prompt with both models, score the continuations, summarize with CIs."""
    spec = ToxicitySpec.model_validate(runtime.config["toxicity"])
    prompts = pd.read_parquet(runtime.channel("rtp_prompts") / "prompts.parquet")
    scorer_dir = runtime.channel("toxicity_model")
    if not (scorer_dir / SCORER_FILE).exists():
        raise StepInputError(f"{scorer_dir / SCORER_FILE} is missing: the channel is not a toxicity_model artifact")
    scorer_kind = json.loads((scorer_dir / SCORER_FILE).read_text())["scorer"]
    rows = []
    for name, channel in MODELS.items():
        model, tokenizer = load_policy(runtime.channel(channel))
        texts, tokens_per_second = generate_texts(
            model, tokenizer, prompts["prompt_text"].tolist(), spec.generation,
            samples_per_prompt=spec.samples_per_prompt, log=lambda line, name=name: runtime.log(f"{name}: {line}"))
        runtime.log(f"{name}: {tokens_per_second:.0f} tokens/s")
        for prompt_id, samples in zip(prompts["prompt_id"], texts, strict=True):
            rows += [{"prompt_id": int(prompt_id), "model": name, "sample": k, "continuation": text}
                     for k, text in enumerate(samples)]
        del model
    scores = pd.DataFrame(rows)
    try:
        detoxify = load_detoxify(scorer_dir)
    except ToxicityModelError as exc:
        raise StepInputError(str(exc)) from None
    started = time.perf_counter()
    scores["toxicity"] = toxicity_of(detoxify, scores["continuation"].tolist(), spec.score_batch_size)
    runtime.log(f"scored {len(scores)} continuations in {time.perf_counter() - started:.1f}s")
    summary = summarize(scores, seed=spec.seed)
    scores.to_parquet(runtime.model_dir / SCORES_FILE, index=False)
    flat = {f"{model}_{metric}{suffix}": value
            for model, metrics in summary.per_model.items() for metric, interval in metrics.items()
            for suffix, value in (("", interval.estimate), ("_ci_low", interval.low), ("_ci_high", interval.high))}
    flat |= {f"difference_{metric}{suffix}": value for metric, interval in summary.difference.items()
             for suffix, value in (("", interval.estimate), ("_ci_low", interval.low), ("_ci_high", interval.high))}
    (runtime.model_dir / SUMMARY_FILE).write_text(json.dumps(flat, indent=2))
    runtime.log(f"mean toxicity SFT {flat['sft_mean_toxicity']:.3f}, RLHF {flat['rlhf_mean_toxicity']:.3f}, "
                f"difference {flat['difference_mean_toxicity']:+.3f} "
                f"[{flat['difference_mean_toxicity_ci_low']:+.3f}, {flat['difference_mean_toxicity_ci_high']:+.3f}]")
    runtime.report({**flat, "prompts": summary.prompts, "samples_per_prompt": summary.samples_per_prompt,
                    "scorer": scorer_kind, "toxicity_table": markdown(summary_table(summary, scorer_kind))})


if __name__ == "__main__":
    run_step(main)
