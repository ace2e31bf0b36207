"""Step: an automatic pairwise judge of RLHF vs SFT responses on the eval prompts (win / tie / loss).

Inputs: channels `eval_responses` and `reward_model`. The judge is the reward model (the recipe's own
yardstick) or, when `evaluation.judge` names one, another sequence-classification model. A difference within
`tie_margin` is a tie. Output: `outcomes.parquet` (one row per prompt) and Wilson CIs in metadata.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rlhf_assets.eval.bootstrap import Interval
from rlhf_assets.eval.preference import RECIPE_REFERENCE, judge_by_margin, summarize_outcomes
from rlhf_assets.ppo.reward_scorer import RewardModelScorer
from rlhf_assets.presets import EvalSpec, RewardSpec
from rlhf_assets.steps.eval_responses import RESPONSES_FILE
from rlhf_assets.steps.reward_scoring import load_reward_scorer, reward_device
from rlhf_assets.steps.runtime import StepInputError, StepRuntime, markdown, run_step

OUTCOMES_FILE = "outcomes.parquet"


def load_judge(runtime: StepRuntime, spec: EvalSpec, reward: RewardSpec) -> tuple[RewardModelScorer, str]:
    """(scorer, its name): the configured judge model, or the reward_model artifact."""
    if spec.judge is None:
        scorer = load_reward_scorer(runtime.channel("reward_model"), max_length=reward.max_length,
                                    max_response_tokens=reward.max_response_tokens,
                                    batch_size=spec.judge_batch_size)
        return scorer, "reward_model"
    device = reward_device()
    model = AutoModelForSequenceClassification.from_pretrained(spec.judge).to(device)
    tokenizer = AutoTokenizer.from_pretrained(spec.judge)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return RewardModelScorer(model, tokenizer, append_eos=False, max_length=reward.max_length,
                             max_response_tokens=reward.max_response_tokens,
                             batch_size=spec.judge_batch_size), spec.judge


def outcome_table(wins: int, ties: int, losses: int) -> str:
    """Markdown: our counts and rates with Wilson CIs beside the recipe's human-eval figures."""
    summary = summarize_outcomes(["win"] * wins + ["tie"] * ties + ["loss"] * losses)
    ref = RECIPE_REFERENCE
    ref_total = sum(ref.values())

    def rate(interval: Interval) -> str:
        return f"{interval.estimate:.0%} [{interval.low:.0%}, {interval.high:.0%}]"

    return "\n".join([
        "| | ours (automatic judge) | recipe (human raters) |", "|---|---|---|",
        f"| RLHF wins | {wins} — {rate(summary.win_rate)} | {ref['wins']} / {ref_total} |",
        f"| ties | {ties} | {ref['ties']} / {ref_total} |",
        f"| RLHF loses | {losses} — {rate(summary.loss_rate)} | {ref['losses']} / {ref_total} |",
        f"| preferred or tied | {wins + ties} — {rate(summary.win_or_tie_rate)} | "
        f"{ref['wins'] + ref['ties']} / {ref_total} |",
        "", "Rates with 95% Wilson intervals.",
    ])


def main(runtime: StepRuntime) -> None:
    """Score both responses to every prompt with the judge and count outcomes."""
    spec = EvalSpec.model_validate(runtime.config["evaluation"])
    reward = RewardSpec.model_validate(runtime.config["reward"])
    path: Path = runtime.channel("eval_responses") / RESPONSES_FILE
    if not path.exists():
        raise StepInputError(f"{path} is missing: the channel is not an eval_responses artifact")
    frame = pd.read_parquet(path)
    scorer, judge_name = load_judge(runtime, spec, reward)
    with torch.no_grad():
        for name in ("sft", "rlhf"):
            frame[f"{name}_score"] = scorer.score(frame["prompt"].tolist(), frame[f"{name}_response"].tolist()).tolist()
    frame["difference"] = frame["rlhf_score"] - frame["sft_score"]
    frame["outcome"] = judge_by_margin(frame["sft_score"].tolist(), frame["rlhf_score"].tolist(), spec.tie_margin)
    frame.to_parquet(runtime.model_dir / OUTCOMES_FILE, index=False)
    summary = summarize_outcomes(frame["outcome"].tolist())
    runtime.log(f"judge {judge_name}: RLHF wins {summary.wins}, ties {summary.ties}, loses {summary.losses} "
                f"(margin {spec.tie_margin}); preferred or tied {summary.win_or_tie_rate.estimate:.0%} "
                f"[{summary.win_or_tie_rate.low:.0%}, {summary.win_or_tie_rate.high:.0%}]")
    report: dict[str, object] = {"wins": summary.wins, "ties": summary.ties, "losses": summary.losses,
                                 "judge": judge_name, "tie_margin": spec.tie_margin,
                                 "mean_score_difference": float(frame["difference"].mean())}
    for label, interval in (("win_rate", summary.win_rate), ("win_or_tie_rate", summary.win_or_tie_rate),
                            ("loss_rate", summary.loss_rate)):
        report |= {label: interval.estimate, f"{label}_ci_low": interval.low, f"{label}_ci_high": interval.high}
    report["outcomes"] = markdown(outcome_table(summary.wins, summary.ties, summary.losses))
    runtime.report(report)


if __name__ == "__main__":
    run_step(main)
