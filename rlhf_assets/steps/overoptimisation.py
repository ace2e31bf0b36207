"""Step: the reward over-optimisation curve of a policy that recorded snapshots during training.

Inputs: channels `policy` (its `snapshots/`, written by PPO when `curve_points` > 0), `sft_model`,
`eval_prompts`, `reward_model` (the proxy the policy was optimised against) and `judge_model` (or the configured
judge). For SFT (step 0), each snapshot and the final policy: responses to the eval prompts with the evaluation's
generation settings and seed, the KL to SFT of each, and both models' gains over SFT's responses with paired
bootstrap CIs (`eval/overoptimisation.py`). Output: `curve.parquet`, a plot and a warning when the proxy rises
while the judge falls.
"""

from __future__ import annotations

import pandas as pd
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlhf_assets.eval.bootstrap import Interval, bootstrap_mean, paired_bootstrap_mean_difference
from rlhf_assets.eval.overoptimisation import CurvePoint, curve_plot, curve_table, over_optimisation_warning
from rlhf_assets.layouts import CURVE, EVAL_PROMPTS
from rlhf_assets.modeling.base import BaseModelRef
from rlhf_assets.modeling.complete_load import load_complete
from rlhf_assets.ppo.sampling import sequence_kl
from rlhf_assets.ppo.snapshots import SNAPSHOTS_DIR, apply_snapshot, read_index
from rlhf_assets.specs import EvalSpec
from rlhf_assets.step_contracts.base import Markdown
from rlhf_assets.step_contracts.evaluation import OverOptimisationReport, OverOptimisationRequest
from rlhf_assets.steps.auto_preference import load_judge
from rlhf_assets.steps.generation import generate_texts, load_policy
from rlhf_assets.steps.reward import load_reward_scorer
from rlhf_assets.steps.runtime import StepRuntime, run_step


def sample_point(runtime: StepRuntime, name: str, model: PreTrainedModel, sft: PreTrainedModel,
                 tokenizer: PreTrainedTokenizerBase, prompts: list[str], spec: EvalSpec
                 ) -> tuple[list[str], list[float]]:
    """One policy's responses to the eval prompts and the KL to SFT of each."""
    generated = generate_texts(model, tokenizer, prompts, spec.generation,
                               log=lambda line: runtime.log(f"{name}: {line}"))
    kl = sequence_kl(model, sft, generated.prompt_ids, [samples[0] for samples in generated.response_ids],
                     tokenizer.pad_token_id)
    return [samples[0] for samples in generated.texts], kl.tolist()


def gain(scores: dict[int, list[float]], step: int, seed: int) -> Interval:
    """The mean gain over SFT's responses (step 0) of the policy at `step`, paired bootstrap over prompts."""
    return paired_bootstrap_mean_difference(scores[0], scores[step], seed=seed)


def main(runtime: StepRuntime) -> None:
    """Sample SFT, every snapshot and the final policy on the eval prompts; score all with the proxy and judge."""
    request = runtime.request(OverOptimisationRequest)
    spec, reward, judge_spec = request.evaluation, request.reward, request.judge
    prompts = runtime.read_table("eval_prompts", EVAL_PROMPTS)["prompt"].tolist()
    policy_dir = runtime.channel("policy")
    snapshots = read_index(policy_dir / SNAPSHOTS_DIR)
    final_step = request.final_step
    if not snapshots:
        runtime.log("the policy recorded no snapshots (curve_points 0, or a trainer that keeps none): the curve "
                    "has SFT and the final policy only")
    sft, tokenizer = load_policy(runtime.channel("sft_model"))
    sft_weights = BaseModelRef.read(runtime.channel("sft_model")).weights
    texts: dict[int, list[str]] = {}
    kls: dict[int, list[float]] = {0: [0.0] * len(prompts)}
    texts[0], _ = sample_point(runtime, "SFT", sft, sft, tokenizer, prompts, spec)
    for entry in snapshots:
        fresh = load_complete(type(sft), sft_weights, dtype=next(sft.parameters()).dtype)
        model = apply_snapshot(fresh, policy_dir / SNAPSHOTS_DIR, entry).to(next(sft.parameters()).device).eval()
        texts[entry["step"]], kls[entry["step"]] = sample_point(runtime, f"step {entry['step']}", model, sft,
                                                                 tokenizer, prompts, spec)
        del model
    final, _ = load_policy(policy_dir)
    texts[final_step], kls[final_step] = sample_point(runtime, f"final (step {final_step})", final, sft, tokenizer,
                                                      prompts, spec)
    del final, sft
    steps = sorted(texts)
    scores: dict[str, dict[int, list[float]]] = {}
    proxy = load_reward_scorer(runtime.channel("reward_model"), max_length=reward.max_length,
                               max_response_tokens=reward.max_response_tokens, batch_size=spec.judge_batch_size)
    judge, judge_name = load_judge(runtime, spec, judge_spec)
    for name, scorer in (("proxy", proxy), ("judge", judge)):
        with torch.no_grad():
            scores[name] = {step: scorer.score(prompts, texts[step]).cpu().tolist() for step in steps}
        runtime.log(f"scored the responses of {len(steps)} policies with the {name}")
    seed = spec.generation.seed
    points = [CurvePoint(step=step, kl=bootstrap_mean(kls[step], seed=seed),
                         proxy_gain=gain(scores["proxy"], step, seed), judge_gain=gain(scores["judge"], step, seed))
              for step in steps]
    frame = pd.DataFrame([{"step": p.step, **{f"{name}{suffix}": getattr(getattr(p, name), part)
                                               for name in ("kl", "proxy_gain", "judge_gain")
                                               for suffix, part in (("", "estimate"), ("_ci_low", "low"),
                                                                    ("_ci_high", "high"))}} for p in points])
    CURVE.write(frame, runtime.model_dir)
    warning = over_optimisation_warning(points)
    peak = max(points, key=lambda p: p.judge_gain.estimate)
    if warning:
        runtime.log(f"WARNING: {warning}")
    runtime.report(OverOptimisationReport(
        points=len(points), snapshots=len(snapshots), judge_peak_step=peak.step,
        judge_peak_kl=peak.kl.estimate, over_optimised=float(warning is not None), judge=judge_name,
        summary=Markdown(
            f"**Reward over-optimisation curve** of {len(points)} policies (SFT, {len(snapshots)} snapshots, the "
            f"final step {final_step}) on {len(prompts)} eval prompts: the judge ({judge_name}) peaked at step "
            f"{peak.step} (KL {peak.kl.estimate:.2f}). " + (f"⚠ {warning}." if warning else
                                                           "No sign of the proxy rising while the judge falls.")),
        curve_table=Markdown(curve_table(points)),
        plot=Markdown(curve_plot(points)),
    ))


if __name__ == "__main__":
    run_step(main)
