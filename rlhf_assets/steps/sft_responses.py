"""Step: SFT's responses to the held-out eval prompts, sampled once for every policy's `eval_responses`.

Inputs: channels `sft_model`, `eval_prompts`. Output: `sft_responses.parquet` (`prompt_id`, `prompt`, `response`)
and the generation settings they were drawn with (`steps/sft_baseline.py`).
"""

from __future__ import annotations

from rlhf_assets.eval.degenerate_text import response_stats
from rlhf_assets.layouts import EVAL_PROMPTS, SFT_RESPONSES
from rlhf_assets.step_contracts.evaluation import SFTResponsesReport, SFTResponsesRequest
from rlhf_assets.steps.generation import generate_texts, load_policy
from rlhf_assets.steps.runtime import StepInputError, StepRuntime, run_step
from rlhf_assets.steps.sft_baseline import write_sampling_record


def main(runtime: StepRuntime) -> None:
    """Sample SFT's response to every eval prompt with the evaluation's settings and seed."""
    spec = runtime.request(SFTResponsesRequest).evaluation
    frame = runtime.read_table("eval_prompts", EVAL_PROMPTS)
    if frame.empty:
        raise StepInputError(f"{EVAL_PROMPTS.path(runtime.channel('eval_prompts'))}: no prompts")
    model, tokenizer = load_policy(runtime.channel("sft_model"))
    generated = generate_texts(model, tokenizer, frame["prompt"].tolist(), spec.generation,
                               log=lambda line: runtime.log(f"sft: {line}"))
    out = frame[["prompt_id", "prompt"]].copy()
    out["response"] = [texts[0] for texts in generated.texts]
    SFT_RESPONSES.write(out, runtime.model_dir)
    write_sampling_record(runtime.model_dir, spec.generation.model_dump(mode="json"))
    stats = response_stats(out["response"].tolist())
    runtime.log(f"sft: {generated.tokens_per_second:.0f} tokens/s, mean {stats.mean_words:.1f} words")
    runtime.report(SFTResponsesReport(
        prompts=len(out), mean_words=stats.mean_words, empty_share=stats.empty_share, short_share=stats.short_share,
        duplicate_share=stats.duplicate_share, tokens_per_second=generated.tokens_per_second,
        sampling_seed=spec.generation.seed))


if __name__ == "__main__":
    run_step(main)
