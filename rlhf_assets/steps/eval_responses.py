"""Step: SFT and RLHF responses to the held-out eval prompts, same settings and seed for both models.

Inputs: channels `sft_model`, `policy` (the policy evaluated: `ppo_policy`, `dpo_policy`, ...), `eval_prompts`,
and `sft_responses` (SFT's responses, sampled once for every policy by `sft_model/eval_responses`; its settings
are checked against this evaluation's). Output: `responses.parquet` with one row per prompt (`prompt_id`,
`prompt`, `sft_response`, `rlhf_response`, `kl_to_sft`) — what the automatic judge and human raters compare.
`kl_to_sft` is Σ_t log π − log π_SFT over the policy's own sampled tokens: the per-response KL estimate PPO is held
to, measured the same way for every policy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rlhf_assets.eval.bootstrap import bootstrap_mean
from rlhf_assets.eval.degenerate_text import response_stats
from rlhf_assets.eval.length import word_count
from rlhf_assets.eval.reporting import interval_text
from rlhf_assets.layouts import EVAL_PROMPTS, RESPONSES, SFT_RESPONSES
from rlhf_assets.ppo.sampling import sequence_kl
from rlhf_assets.specs import EvalSpec
from rlhf_assets.step_contracts.base import Estimate, Markdown
from rlhf_assets.step_contracts.evaluation import EvalResponsesReport, EvalResponsesRequest, ResponseFigures
from rlhf_assets.steps.generation import generate_texts, load_policy
from rlhf_assets.steps.runtime import StepInputError, StepRuntime, run_step
from rlhf_assets.steps.sft_baseline import check_sampling_record

if TYPE_CHECKING:
    import pandas as pd

MODELS = {"sft": "sft_model", "rlhf": "policy"}
SFT_BASELINE = "sft_model/eval_responses"


def sft_responses(runtime: StepRuntime, frame: pd.DataFrame, spec: EvalSpec) -> list[str]:
    """SFT's shared responses, in `frame`'s prompt order, after checking they answer these prompts with these
    settings."""
    directory = runtime.channel("sft_responses")
    check_sampling_record(directory, spec.generation.model_dump(mode="json"), SFT_BASELINE)
    baseline = runtime.read_table("sft_responses", SFT_RESPONSES).set_index("prompt_id")
    missing = sorted(set(frame["prompt_id"]) - set(baseline.index))
    if missing or not baseline.loc[frame["prompt_id"], "prompt"].tolist() == frame["prompt"].tolist():
        raise StepInputError(f"{SFT_RESPONSES.path(directory)} answers other prompts than "
                             f"{EVAL_PROMPTS.path(runtime.channel('eval_prompts'))}"
                             + (f" (missing prompt ids {missing[:5]})" if missing else "")
                             + f": materialize {SFT_BASELINE} from the same eval_prompts")
    return baseline.loc[frame["prompt_id"], "response"].tolist()


def main(runtime: StepRuntime) -> None:
    """Take SFT's shared responses, generate with the policy, write the pairs and the policy's KL to SFT."""
    request = runtime.request(EvalResponsesRequest)
    spec = request.evaluation
    frame = runtime.read_table("eval_prompts", EVAL_PROMPTS)
    if frame.empty:
        raise StepInputError(f"{EVAL_PROMPTS.path(runtime.channel('eval_prompts'))}: no prompts")
    out = frame[["prompt_id", "prompt"]].copy()
    out["sft_response"] = sft_responses(runtime, frame, spec)
    policy, tokenizer = load_policy(runtime.channel("policy"))
    generated = generate_texts(policy, tokenizer, out["prompt"].tolist(), spec.generation,
                               log=lambda line: runtime.log(f"rlhf: {line}"))
    out["rlhf_response"] = [t[0] for t in generated.texts]
    figures: dict[str, ResponseFigures] = {}
    for name in MODELS:
        stats = response_stats(out[f"{name}_response"].tolist())
        runtime.log(f"{name}: mean {stats.mean_words:.1f} words, {stats.empty_share:.0%} without words, "
                    f"{stats.short_share:.0%} ≤ 2 words, {stats.duplicate_share:.0%} duplicates")
        words = bootstrap_mean([word_count(text) for text in out[f"{name}_response"]], seed=spec.generation.seed)
        figures[name] = ResponseFigures(
            mean_words=Estimate(estimate=stats.mean_words, ci_low=words.low, ci_high=words.high),
            empty_share=stats.empty_share, short_share=stats.short_share, duplicate_share=stats.duplicate_share)
    sft, _ = load_policy(runtime.channel("sft_model"))
    kl = sequence_kl(policy, sft, generated.prompt_ids, [samples[0] for samples in generated.response_ids],
                     tokenizer.pad_token_id)
    out["kl_to_sft"] = kl.tolist()
    kl_interval = bootstrap_mean(out["kl_to_sft"].tolist(), seed=spec.generation.seed)
    del policy, sft
    RESPONSES.write(out, runtime.model_dir)
    summary = Markdown(
        f"**{len(out)} held-out prompts**, one response per model (seed {spec.generation.seed}); the policy's KL "
        f"to SFT {interval_text(kl_interval.estimate, kl_interval.low, kl_interval.high)} nats per response "
        f"(bound {request.kl_bound}). "
        + "; ".join(f"{name.upper()}: mean {f.mean_words.estimate:.1f} words, {f.empty_share:.0%} without words, "
                    f"{f.short_share:.0%} ≤ 2 words, {f.duplicate_share:.0%} repeated"
                    for name, f in figures.items()))
    runtime.report(EvalResponsesReport(
        prompts=len(out), rlhf_tokens_per_second=generated.tokens_per_second, sft=figures["sft"],
        rlhf=figures["rlhf"], kl_to_sft=Estimate.of(kl_interval), kl_bound=request.kl_bound, summary=summary))


if __name__ == "__main__":
    run_step(main)
