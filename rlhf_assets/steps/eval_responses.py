"""Step: SFT and RLHF responses to the held-out eval prompts, same settings and seed for both models.

Inputs: channels `sft_model`, `policy` (the policy evaluated: `ppo_policy`, `dpo_policy`, ...), `eval_prompts`.
Output: `responses.parquet` with one row per prompt (`prompt_id`, `prompt`, `sft_response`, `rlhf_response`,
`kl_to_sft`) — what the automatic judge and human raters compare. `kl_to_sft` is Σ_t log π − log π_SFT over the
policy's own sampled tokens: the per-response KL estimate PPO is held to, measured the same way for every policy.
"""

from __future__ import annotations

from rlhf_assets.eval.degeneracy import response_stats
from rlhf_assets.layouts import EVAL_PROMPTS, RESPONSES
from rlhf_assets.ppo.sampling import sequence_kl
from rlhf_assets.presets import EvalSpec
from rlhf_assets.steps.generation import generate_texts, load_policy
from rlhf_assets.steps.runtime import StepInputError, StepRuntime, markdown, run_step

MODELS = {"sft": "sft_model", "rlhf": "policy"}


def main(runtime: StepRuntime) -> None:
    """Generate with SFT, then with the policy, write the paired responses and the policy's KL to SFT."""
    spec = EvalSpec.model_validate(runtime.config["evaluation"])
    frame = runtime.read_table("eval_prompts", EVAL_PROMPTS)
    if frame.empty:
        raise StepInputError(f"{EVAL_PROMPTS.path(runtime.channel('eval_prompts'))}: no prompts")
    out = frame[["prompt_id", "prompt"]].copy()
    report: dict[str, object] = {"prompts": len(out)}
    models, generated = {}, {}
    for name, channel in MODELS.items():
        models[name], tokenizer = load_policy(runtime.channel(channel))
        generated[name] = generate_texts(
            models[name], tokenizer, out["prompt"].tolist(), spec.generation,
            log=lambda line, name=name: runtime.log(f"{name}: {line}"))
        out[f"{name}_response"] = [t[0] for t in generated[name].texts]
        stats = response_stats(out[f"{name}_response"].tolist())
        runtime.log(f"{name}: {generated[name].tokens_per_second:.0f} tokens/s, mean {stats.mean_words:.1f} words, "
                    f"{stats.empty_share:.0%} without words, {stats.short_share:.0%} ≤ 2 words, "
                    f"{stats.duplicate_share:.0%} duplicates")
        report |= {f"{name}_mean_words": stats.mean_words, f"{name}_empty_share": stats.empty_share,
                   f"{name}_short_share": stats.short_share, f"{name}_duplicate_share": stats.duplicate_share,
                   f"{name}_tokens_per_second": generated[name].tokens_per_second}
    policy_run = generated["rlhf"]
    kl = sequence_kl(models["rlhf"], models["sft"], policy_run.prompt_ids,
                     [samples[0] for samples in policy_run.response_ids], tokenizer.pad_token_id)
    out["kl_to_sft"] = kl.tolist()
    report["kl_to_sft"] = float(kl.mean())
    del models
    RESPONSES.write(out, runtime.model_dir)
    report["summary"] = markdown(
        f"**{len(out)} held-out prompts**, one response per model (seed {spec.generation.seed}); the policy's KL "
        f"to SFT {report['kl_to_sft']:.2f} nats per response. "
        + "; ".join(f"{name.upper()}: mean {report[f'{name}_mean_words']:.1f} words, "
                    f"{report[f'{name}_empty_share']:.0%} without words, "
                    f"{report[f'{name}_short_share']:.0%} ≤ 2 words, "
                    f"{report[f'{name}_duplicate_share']:.0%} repeated" for name in MODELS))
    runtime.report(report)


if __name__ == "__main__":
    run_step(main)
