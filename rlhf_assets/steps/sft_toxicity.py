"""Step: SFT's scored continuations of a prompt set, sampled and scored once for every policy's toxicity evaluation.

Inputs: channels `sft_model`, `prompts` (RealToxicityPrompts' `rtp_prompts` or a declared prompt set),
`toxicity_model`. Output: `scores.parquet` with SFT's rows (model `sft`) and the settings they were drawn and scored
with (`steps/sft_baseline.py`), which each policy's `toxicity_scores` checks against its own.
"""

from __future__ import annotations

from rlhf_assets.layouts import PROMPTS, TOXICITY_SCORES
from rlhf_assets.step_contracts.evaluation import SFTToxicityReport, SFTToxicityRequest
from rlhf_assets.steps.runtime import StepRuntime, run_step
from rlhf_assets.steps.sft_baseline import write_sampling_record
from rlhf_assets.steps.toxicity_scores import sampling_settings, scored_continuations, scorer_kind_of


def main(runtime: StepRuntime) -> None:
    """Continue every prompt k times with SFT and score each continuation."""
    request = runtime.request(SFTToxicityRequest)
    spec = request.toxicity
    prompts = runtime.read_table("prompts", PROMPTS)
    scorer_kind = scorer_kind_of(runtime)
    scores = scored_continuations(runtime, "sft", "sft_model", prompts, spec, scorer_kind)
    TOXICITY_SCORES.write(scores, runtime.model_dir)
    write_sampling_record(runtime.model_dir, sampling_settings(spec, scorer_kind))
    runtime.report(SFTToxicityReport(
        prompts=len(prompts), continuations=len(scores), scorer=scorer_kind, prompt_set=request.prompt_set,
        sft_mean_toxicity=float(scores["toxicity"].mean()), sampling_seed=spec.generation.seed))


if __name__ == "__main__":
    run_step(main)
