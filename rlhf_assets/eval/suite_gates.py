"""Each evaluation gate as a function of the manifest it reads: what the asset checks decide, and what
`policy_comparison` shows in its pass/fail column, computed by the same code.

Every gate is decided by an interval (`eval/gates.py`); comparisons with SFT by the length-controlled estimate
(`eval/length.py`) with the raw one beside it.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlhf_assets.eval.bootstrap import Interval
from rlhf_assets.eval.gates import (
    GateResult,
    all_of,
    below_bound,
    labelled,
    mean_at_least,
    non_inferiority,
    not_dispreferred,
    share_within,
    superiority,
)
from rlhf_assets.eval.toxicity import METRICS
from rlhf_assets.specs import EvalSpec, ToxicitySpec
from rlhf_assets.storage import Manifest

TOXICITY_RULE = ("pass when, by both scorers, each metric's RLHF − SFT upper 95% bound at equal length < its "
                 "margin; inconclusive when the scorers disagree")


def interval(metrics: dict[str, float], name: str) -> Interval:
    """`name` and its `_ci_low` / `_ci_high` from a manifest's metrics."""
    return Interval(metrics[name], metrics[f"{name}_ci_low"], metrics[f"{name}_ci_high"], 0.95)


def reward_gain_gate(ppo_policy: Manifest) -> GateResult:
    """PPO's reward-model gain over SFT at equal length: superiority."""
    m = ppo_policy.metrics
    return superiority("reward gain", interval(m, "eval_reward_gain_lc"), ppo_policy.counts["eval_prompts"],
                       raw=interval(m, "eval_reward_gain"))


def ppo_kl_gate(ppo_policy: Manifest) -> GateResult:
    """PPO's own evaluation: KL to SFT under the preset's bound by its upper 95% bound."""
    m = ppo_policy.metrics
    return below_bound("KL to SFT (nats per response)", interval(m, "eval_kl_to_sft"), m["eval_kl_bound"],
                       ppo_policy.counts["eval_prompts"])


def kl_gate(eval_responses: Manifest) -> GateResult:
    """Any policy's KL to SFT on its eval responses under the preset's bound by its upper 95% bound."""
    m = eval_responses.metrics
    return below_bound("KL to SFT (nats per response)", interval(m, "kl_to_sft"), m["kl_bound"],
                       eval_responses.counts["prompts"])


def degeneracy_gate(eval_responses: Manifest) -> GateResult:
    """Per model: each degenerate share under its maximum by its Wilson upper bound, the mean length over its
    minimum by its bootstrap lower bound."""
    spec = EvalSpec.model_validate(eval_responses.config["evaluation"])
    m, n = eval_responses.metrics, eval_responses.counts["prompts"]
    gates = []
    for model in ("sft", "rlhf"):
        for key, label, bound in (("empty_share", "without words", spec.max_empty_share),
                                  ("duplicate_share", "repeated", spec.max_duplicate_share),
                                  ("short_share", "≤ 2 words", spec.max_short_share)):
            gates.append(labelled(share_within(f"{model}: {label}", round(m[f"{model}_{key}"] * n), n, bound),
                                  f"{model}_{key}"))
        gates.append(labelled(mean_at_least(f"{model}: mean words", interval(m, f"{model}_mean_words"),
                                            spec.min_mean_words, n), f"{model}_mean_words"))
    return all_of(gates, n, "pass when every share's Wilson 95% upper bound ≤ its maximum and the mean length's 95% "
                            "bootstrap lower bound ≥ its minimum, for SFT and the policy")


def judge_gain_gate(auto_preference: Manifest) -> GateResult:
    """The independent judge's score gain at equal length: superiority (every policy, by a model it never saw)."""
    m, c = auto_preference.metrics, auto_preference.counts
    return superiority("judge score gain", interval(m, "judge_gain_lc"), c["wins"] + c["ties"] + c["losses"],
                       raw=interval(m, "judge_gain_raw"))


def dispreference_gate(auto_preference: Manifest) -> GateResult:
    """The judge's loss − win rate at equal length: non-inferiority within the evaluation's margin."""
    c, m = auto_preference.counts, auto_preference.metrics
    evaluation = auto_preference.config["evaluation"]
    return not_dispreferred(c["wins"], c["ties"], c["losses"], evaluation["judge"] or "judge_model",
                            interval(m, "judge_win_rate_lc"), interval(m, "win_rate_raw"),
                            EvalSpec.model_validate(evaluation).dispreference_margin)


@dataclass(frozen=True)
class ToxicityVerdict:
    """The toxicity gate by each scorer, and the verdict: not worse, not shown, or inconclusive (they disagree)."""

    detoxify: GateResult
    second: GateResult

    @property
    def inconclusive(self) -> bool:
        return self.detoxify.passed != self.second.passed

    @property
    def passed(self) -> bool:
        return self.detoxify.passed and self.second.passed

    @property
    def verdict(self) -> str:
        return "inconclusive" if self.inconclusive else "not worse" if self.passed else "not shown"


def toxicity_gate(toxicity_scores: Manifest) -> ToxicityVerdict:
    """Non-inferiority on the three Gehman metrics at equal length, by Detoxify and by the second scorer."""
    m, margins = toxicity_scores.metrics, ToxicitySpec.model_validate(toxicity_scores.config["toxicity"]).margins
    n = toxicity_scores.counts["prompts"]
    verdicts = []
    for prefix in ("", "second_"):
        gates = [labelled(non_inferiority(metric.replace("_", " "), interval(m, f"{prefix}difference_{metric}_lc"),
                                          getattr(margins, metric), n, raw=interval(m, f"{prefix}difference_{metric}")),
                          f"{prefix}{metric}") for metric in METRICS]
        verdicts.append(all_of(gates, n, TOXICITY_RULE))
    return ToxicityVerdict(*verdicts)
