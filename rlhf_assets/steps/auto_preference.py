"""Step: an automatic pairwise judge of RLHF vs SFT responses on the eval prompts (win / tie / loss).

Inputs: channels `eval_responses`, `judge_model` and `reward_model`. The verdict comes from an independent judge:
the `judge_model` artifact (a reward model trained on the judge split, which PPO never saw) or, when
`evaluation.judge` names one, another sequence-classification model. The reward model PPO was optimised against
also scores both responses, shown beside the verdict as "optimised against" (its preference for the policy is
expected, not evidence). A tie is a difference within `tie_margin` standard deviations of the judge's scores on
these responses, so the margin means the same for any judge's scale. Output: `outcomes.parquet` (one row per
prompt), Wilson CIs and an exact sign test in metadata.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rlhf_assets.eval.agreement import sign_test
from rlhf_assets.eval.bootstrap import Interval
from rlhf_assets.eval.length import (
    LengthControlled,
    length_controlled_win_rate,
    log_length,
    regression_adjusted,
    word_count,
)
from rlhf_assets.eval.preference import RECIPE_REFERENCE, PreferenceSummary, judge_by_margin, summarize_outcomes
from rlhf_assets.eval.reporting import interval_text
from rlhf_assets.layouts import OUTCOMES, RESPONSES
from rlhf_assets.modeling.complete_load import load_complete
from rlhf_assets.modeling.reward_model import RewardModelScorer, RewardReadout
from rlhf_assets.specs import EvalSpec, RewardSpec
from rlhf_assets.step_contracts.base import Estimate, LengthControlledFigures, Markdown
from rlhf_assets.step_contracts.evaluation import AutoPreferenceReport, AutoPreferenceRequest
from rlhf_assets.steps.reward import load_reward_scorer, reward_device
from rlhf_assets.steps.runtime import StepRuntime, run_step


def load_judge(runtime: StepRuntime, spec: EvalSpec, judge: RewardSpec) -> tuple[RewardModelScorer, str]:
    """(scorer, its name): the configured judge model, or the judge_model artifact."""
    if spec.judge is None:
        scorer = load_reward_scorer(runtime.channel("judge_model"), max_length=judge.max_length,
                                    max_response_tokens=judge.max_response_tokens,
                                    batch_size=spec.judge_batch_size)
        return scorer, "judge_model"
    device = reward_device()
    model = load_complete(AutoModelForSequenceClassification, spec.judge).to(device)
    tokenizer = AutoTokenizer.from_pretrained(spec.judge)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    readout = RewardReadout(rule="model", eos_token_id=None, reference=f"{spec.judge}: its own forward's pooling")
    return RewardModelScorer(model, tokenizer, readout=readout, max_length=judge.max_length,
                             max_response_tokens=judge.max_response_tokens,
                             batch_size=spec.judge_batch_size), spec.judge


def score_pairs(scorer: RewardModelScorer, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(SFT scores, RLHF scores) of every prompt's two responses."""
    with torch.no_grad():
        return tuple(scorer.score(frame["prompt"].tolist(), frame[f"{name}_response"].tolist()).cpu().numpy()
                     for name in ("sft", "rlhf"))


def absolute_margin(sft: np.ndarray, rlhf: np.ndarray, margin_sd: float) -> float:
    """`margin_sd` standard deviations of all the judge's scores on these responses (both models pooled)."""
    return float(margin_sd * np.concatenate([sft, rlhf]).std())


def outcome_table(verdict: PreferenceSummary, judge: str, optimised: PreferenceSummary) -> str:
    """Markdown: the independent judge's counts and rates with Wilson CIs, the optimised-against reward model's
    counts, and the recipe's human-eval figures."""
    ref = RECIPE_REFERENCE
    ref_total = sum(ref.values())

    def rate(interval: Interval) -> str:
        return f"{interval.estimate:.0%} [{interval.low:.0%}, {interval.high:.0%}]"

    return "\n".join([
        f"| | independent judge ({judge}) | reward model (optimised against) | recipe (human raters) |",
        "|---|---|---|---|",
        f"| RLHF wins | {verdict.wins} — {rate(verdict.win_rate)} | {optimised.wins} | {ref['wins']} / {ref_total} |",
        f"| ties | {verdict.ties} | {optimised.ties} | {ref['ties']} / {ref_total} |",
        f"| RLHF loses | {verdict.losses} — {rate(verdict.loss_rate)} | {optimised.losses} | "
        f"{ref['losses']} / {ref_total} |",
        f"| preferred or tied | {verdict.wins + verdict.ties} — {rate(verdict.win_or_tie_rate)} | "
        f"{optimised.wins + optimised.ties} | {ref['wins'] + ref['ties']} / {ref_total} |",
        f"| sign test (wins vs losses) | p = {sign_test(verdict.wins, verdict.losses):.2g} | "
        f"p = {sign_test(optimised.wins, optimised.losses):.2g} | p = {sign_test(ref['wins'], ref['losses']):.2g} |",
        "", "Rates with 95% Wilson intervals; two-sided exact sign test, ties dropped. The reward model column is "
        "the model PPO maximised: it is expected to favour the policy and is not evidence that people would.",
    ])


def length_controlled(frame: pd.DataFrame, seed: int) -> dict[str, LengthControlled]:
    """The judge's win rate, the judge's score gain and the optimised-against RM's gain, each at equal length."""
    words = frame["rlhf_words"] - frame["sft_words"]
    log_difference = log_length(frame["rlhf_response"].tolist()) - log_length(frame["sft_response"].tolist())
    return {"win_rate": length_controlled_win_rate(frame["outcome"].tolist(), words.tolist(), seed=seed),
            "judge_gain": regression_adjusted(frame["difference"], log_difference, words, seed=seed),
            "rm_gain": regression_adjusted(frame["rlhf_rm_score"] - frame["sft_rm_score"], log_difference, words,
                                           seed=seed)}


def length_table(controlled: dict[str, LengthControlled]) -> str:
    """Markdown: each preference figure raw and at equal length, with the length difference it corrects for."""
    labels = {"win_rate": "judge win rate (ties ½)", "judge_gain": "judge score gain",
              "rm_gain": "RM-score gain (optimised against)"}
    lines = ["| figure | raw | length-controlled | Δ words (policy − SFT) | method |", "|---|---|---|---|---|"]
    for name, result in controlled.items():
        percent = name == "win_rate"
        cells = [interval_text(i.estimate, i.low, i.high, signed=not percent, percent=percent)
                 for i in (result.raw, result.controlled)]
        words = result.length_difference
        lines.append(f"| {labels[name]} | {cells[0]} | {cells[1]} | "
                     f"{interval_text(words.estimate, words.low, words.high, signed=True)} | {result.method} |")
    return "\n".join(lines)


def main(runtime: StepRuntime) -> None:
    """Score both responses to every prompt with the independent judge and the optimised-against RM; count."""
    request = runtime.request(AutoPreferenceRequest)
    spec, reward, judge_spec = request.evaluation, request.reward, request.judge
    frame = runtime.read_table("eval_responses", RESPONSES)
    judge, judge_name = load_judge(runtime, spec, judge_spec)
    frame["sft_score"], frame["rlhf_score"] = score_pairs(judge, frame)
    del judge
    optimised = load_reward_scorer(runtime.channel("reward_model"), max_length=reward.max_length,
                                   max_response_tokens=reward.max_response_tokens, batch_size=spec.judge_batch_size)
    frame["sft_rm_score"], frame["rlhf_rm_score"] = score_pairs(optimised, frame)
    margin = absolute_margin(frame["sft_score"].to_numpy(), frame["rlhf_score"].to_numpy(), spec.tie_margin)
    rm_margin = absolute_margin(frame["sft_rm_score"].to_numpy(), frame["rlhf_rm_score"].to_numpy(), spec.tie_margin)
    frame["difference"] = frame["rlhf_score"] - frame["sft_score"]
    frame["outcome"] = judge_by_margin(frame["sft_score"].tolist(), frame["rlhf_score"].tolist(), margin)
    frame["rm_outcome"] = judge_by_margin(frame["sft_rm_score"].tolist(), frame["rlhf_rm_score"].tolist(), rm_margin)
    for name in ("sft", "rlhf"):
        frame[f"{name}_words"] = frame[f"{name}_response"].map(word_count)
    OUTCOMES.write(frame, runtime.model_dir)
    controlled = length_controlled(frame, spec.generation.seed)
    summary = summarize_outcomes(frame["outcome"].tolist())
    rm_summary = summarize_outcomes(frame["rm_outcome"].tolist())
    p_value = sign_test(summary.wins, summary.losses)
    runtime.log(f"judge {judge_name}: RLHF wins {summary.wins}, ties {summary.ties}, loses {summary.losses} "
                f"(tie margin {spec.tie_margin} SD = {margin:.3f}); sign test p = {p_value:.2g}; reward model "
                f"(optimised against): {rm_summary.wins} / {rm_summary.ties} / {rm_summary.losses}")
    ref = RECIPE_REFERENCE
    rate = summary.win_or_tie_rate
    shown_rate = interval_text(rate.estimate, rate.low, rate.high, percent=True)
    verdict = f"RLHF {summary.wins} wins / {summary.ties} ties / {summary.losses} losses"
    recipe = f"{ref['wins']} / {ref['ties']} / {ref['losses']}, {ref['wins'] + ref['ties']}% preferred or tied"
    optimised_counts = f"{rm_summary.wins} / {rm_summary.ties} / {rm_summary.losses}"
    summary_text = (
        f"**{judge_name}** (independent judge) on {summary.total} prompts: {verdict}; preferred or tied "
        f"{shown_rate}; sign test p = {p_value:.2g} (tie: within {spec.tie_margin} SD of the judge's scores). "
        f"Recipe (human raters): {recipe}. The optimised-against reward model: {optimised_counts}.")
    runtime.report(AutoPreferenceReport(
        wins=summary.wins, ties=summary.ties, losses=summary.losses, judge=judge_name, tie_margin_sd=spec.tie_margin,
        tie_margin_score=margin, sign_test_p=p_value, mean_score_difference=float(frame["difference"].mean()),
        rm_wins=rm_summary.wins, rm_ties=rm_summary.ties, rm_losses=rm_summary.losses,
        win_rate=Estimate.of(summary.win_rate), win_or_tie_rate=Estimate.of(summary.win_or_tie_rate),
        loss_rate=Estimate.of(summary.loss_rate),
        judge_win_rate=LengthControlledFigures.of(controlled["win_rate"]),
        win_rate_raw=Estimate.of(controlled["win_rate"].raw),
        judge_gain=LengthControlledFigures.of(controlled["judge_gain"]),
        judge_gain_raw=Estimate.of(controlled["judge_gain"].raw),
        rm_gain=LengthControlledFigures.of(controlled["rm_gain"]), rm_gain_raw=Estimate.of(controlled["rm_gain"].raw),
        summary=Markdown(summary_text), outcomes=Markdown(outcome_table(summary, judge_name, rm_summary)),
        length_control=Markdown(length_table(controlled))))


if __name__ == "__main__":
    run_step(main)
