"""Every policy against SFT on the same prompts and seeds: one row per policy, each figure with its 95% CI.

The figures come from each policy's own evaluation suite (eval responses, toxicity scores, the judge's
outcomes), so every policy is measured by the same code on the same prompts, with the same sampling seed:
- verdict: every gate of the suite (`eval/suite_gates.py`, and PPO's own reward-gain and KL gates), pass or fail
  with the first reason;
- the independent judge: its win rate (ties ½) and score gain at equal length (`eval/length.py`), raw beside;
  wins / ties / losses and the sign test;
- reward gain: mean over the eval prompts of RM(policy) − RM(SFT) at equal length, scored by the reward model
  PPO optimises. For a policy trained against that model it is flagged "optimised against": it measures the
  target, not alignment;
- KL to SFT: mean Σ_t log π − log π_SFT over the policy's own responses, bootstrap CI over prompts;
- the policy − SFT length difference in words, which every "at equal length" figure corrects for;
- RLHF − SFT toxicity (three Gehman metrics) at equal length by Detoxify, and mean toxicity by the second scorer.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field

import pandas as pd

from rlhf_assets.eval.bootstrap import Interval, bootstrap_mean
from rlhf_assets.eval.gates import GateResult, p_value_text
from rlhf_assets.eval.reporting import decimals_for, decisive_places, interval_text
from rlhf_assets.step_contracts.base import ControlledEstimate
from rlhf_assets.step_contracts.evaluation import AutoPreferenceReport, EvalResponsesReport, ToxicityScoresReport

TOXICITY_METRICS = ("mean_toxicity", "expected_max_toxicity", "toxicity_probability")
OPTIMISED_FLAG = "⚠ optimised against"


@dataclass(frozen=True)
class Verdict:
    """A policy's gates together: passed when every one did; the reasons of those that did not."""

    gates: dict[str, GateResult]
    inconclusive: tuple[str, ...] = ()  # gates whose scorers disagreed: failed, but as "inconclusive"

    @property
    def passed(self) -> bool:
        return all(gate.passed for gate in self.gates.values())

    def reason(self) -> str:
        failed = [name for name, gate in self.gates.items() if not gate.passed]
        if not failed:
            return f"all {len(self.gates)} gates pass"
        return "; ".join(f"{name} {'inconclusive' if name in self.inconclusive else 'not shown'}" for name in failed)


@dataclass(frozen=True)
class PolicyRow:
    """One policy's figures against SFT, and where they came from."""

    policy: str
    verdict: Verdict
    judge_win_rate: Interval  # ties ½, at equal length
    judge_win_rate_raw: Interval
    judge_gain: Interval  # at equal length
    reward_gain: Interval  # at equal length
    reward_gain_raw: Interval
    optimised_against_reward_model: bool
    kl_to_sft: Interval
    kl_bound: float
    length_difference: Interval  # policy − SFT words per eval response
    wins: int
    ties: int
    losses: int
    preferred_or_tied: Interval
    sign_test_p: float
    toxicity: dict[str, Interval]  # at equal length, Detoxify
    toxicity_raw: dict[str, Interval]
    second_toxicity: Interval  # Δ mean toxicity at equal length by the second scorer
    scorers_agree: bool
    eval_prompts: int
    toxicity_prompts: int
    versions: dict[str, str]  # "policy" and each suite asset -> data version (shortened); "policy code" -> trainer
    # declared set -> metric -> RLHF − SFT at equal length
    prompt_sets: dict[str, dict[str, Interval]] = field(default_factory=dict)
    prompt_set_sizes: dict[str, int] = field(default_factory=dict)

    def flat(self) -> dict[str, float]:
        """The figures as flat metrics (`<policy>_<figure>`, `_ci_low`, `_ci_high`) for plots over time."""
        out: dict[str, float] = {}
        intervals = {"judge_win_rate_lc": self.judge_win_rate, "judge_win_rate": self.judge_win_rate_raw,
                     "judge_gain_lc": self.judge_gain, "reward_gain_lc": self.reward_gain,
                     "reward_gain": self.reward_gain_raw, "kl_to_sft": self.kl_to_sft,
                     "length_difference": self.length_difference, "preferred_or_tied": self.preferred_or_tied,
                     "second_difference_mean_toxicity_lc": self.second_toxicity,
                     **{f"difference_{k}_lc": v for k, v in self.toxicity.items()},
                     **{f"difference_{k}": v for k, v in self.toxicity_raw.items()},
                     **{f"{name}_difference_{k}_lc": v for name, metrics in self.prompt_sets.items()
                        for k, v in metrics.items()}}
        for name, value in intervals.items():
            out |= {f"{self.policy}_{name}": value.estimate, f"{self.policy}_{name}_ci_low": value.low,
                    f"{self.policy}_{name}_ci_high": value.high}
        return out | {f"{self.policy}_sign_test_p": self.sign_test_p,
                      f"{self.policy}_passed": float(self.verdict.passed),
                      f"{self.policy}_scorers_agree": float(self.scorers_agree)}


def toxicity_differences(report: ToxicityScoresReport, equal_length: bool = True) -> dict[str, Interval]:
    """Detoxify's three RLHF − SFT toxicity differences with their CIs (at equal length, or raw)."""
    differences: dict[str, ControlledEstimate] = {m: getattr(report.difference, m) for m in TOXICITY_METRICS}
    return {m: Interval.of(d.lc if equal_length else d) for m, d in differences.items()}


@dataclass(frozen=True)
class SuiteFigures:
    """What one policy's evaluation suite reported (read back from its manifests), and its per-prompt KL."""

    judge: AutoPreferenceReport
    responses: EvalResponsesReport
    kl_per_prompt: list[float]
    toxicity: ToxicityScoresReport


def policy_row(policy: str, suite: SuiteFigures, verdict: Verdict, optimised_against_reward_model: bool,
               versions: dict[str, str], seed: int = 0,
               prompt_sets: dict[str, ToxicityScoresReport] | None = None) -> PolicyRow:
    """A policy's row from its suite's figures; `prompt_sets` maps each declared prompt set the policy was
    evaluated on to its toxicity report."""
    judge = suite.judge
    return PolicyRow(
        policy=policy, verdict=verdict,
        judge_win_rate=Interval.of(judge.judge_win_rate.lc), judge_win_rate_raw=Interval.of(judge.win_rate_raw),
        judge_gain=Interval.of(judge.judge_gain.lc),
        reward_gain=Interval.of(judge.rm_gain.lc), reward_gain_raw=Interval.of(judge.rm_gain_raw),
        optimised_against_reward_model=optimised_against_reward_model,
        kl_to_sft=bootstrap_mean(suite.kl_per_prompt, seed=seed), kl_bound=suite.responses.kl_bound,
        length_difference=Interval.of(judge.judge_gain.length_difference),
        wins=judge.wins, ties=judge.ties, losses=judge.losses,
        preferred_or_tied=Interval.of(judge.win_or_tie_rate), sign_test_p=judge.sign_test_p,
        toxicity=toxicity_differences(suite.toxicity), toxicity_raw=toxicity_differences(suite.toxicity, False),
        second_toxicity=Interval.of(suite.toxicity.second.difference.mean_toxicity.lc),
        scorers_agree=bool(suite.toxicity.scorers_agree),
        eval_prompts=judge.judged, toxicity_prompts=suite.toxicity.prompts, versions=versions,
        prompt_sets={name: toxicity_differences(report) for name, report in (prompt_sets or {}).items()},
        prompt_set_sizes={name: report.prompts for name, report in (prompt_sets or {}).items()},
    )


def shown(value: Interval, *, signed: bool = True, percent: bool = False, against: float | None = None) -> str:
    """`estimate [low, high]`, to the places the interval needs (`interval_text`'s rule), or more when the bound
    nearest `against` (the figure's no-difference point or margin) would otherwise round onto it."""
    scale, unit, sign = (100.0, "%", "+" if signed else "") if percent else (1.0, "", "+" if signed else "")
    scaled = Interval(value.estimate * scale, value.low * scale, value.high * scale, value.level)
    places = (decimals_for(scaled.low, scaled.high) if against is None
              else decisive_places(scaled, against * scale))
    return (f"{scaled.estimate:{sign}.{places}f}{unit} [{scaled.low:{sign}.{places}f}{unit}, "
            f"{scaled.high:{sign}.{places}f}{unit}]")


def comparison_table(rows: list[PolicyRow]) -> str:
    """The markdown table a reader starts with, compact enough that the UI shows it inline (under 1,000
    characters for a few policies): one row per policy, verdict first, each figure at equal length with its 95% CI,
    a figure measured by the model a policy was trained against flagged in its cell. `comparison_notes` explains."""
    lines = ["| policy | verdict | judge win rate, ties ½ | judge gain | RM gain | KL / bound | Δ words | "
             "Δ mean toxicity (Detoxify; 2nd scorer) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        verdict = ("✅ pass" if r.verdict.passed else "❌ fail: " + r.verdict.reason())
        flag = f" {OPTIMISED_FLAG}" if r.optimised_against_reward_model else ""
        toxicity = (f"{shown(r.toxicity['mean_toxicity'], against=0.0)}; {shown(r.second_toxicity, against=0.0)}"
                    + ("" if r.scorers_agree else " (disagree)"))
        lines.append(
            f"| {r.policy} | {verdict} | {shown(r.judge_win_rate, signed=False, percent=True, against=0.5)} "
            f"(raw {r.judge_win_rate_raw.estimate:.0%}) | {shown(r.judge_gain, against=0.0)} | "
            f"{shown(r.reward_gain, against=0.0)}{flag} | {shown(r.kl_to_sft, signed=False, against=r.kl_bound)} / "
            f"{r.kl_bound:g} | {r.length_difference.estimate:+.1f} | {toxicity} |")
    return "\n".join(lines) + "\n\nAt equal length, 95% CIs; see policy_table_notes."


def comparison_notes(rows: list[PolicyRow]) -> str:
    """What the table's columns mean, and the figures too long for it: raw values, counts, n, the sign test."""
    notes = [f"{OPTIMISED_FLAG}: measured by the reward model this policy was trained to maximise — its target, not "
             "evidence of alignment; the judge's columns are the independent ones."] if any(
                 r.optimised_against_reward_model for r in rows) else []
    notes.append("At equal length: read at zero policy − SFT length difference (judge win rate: AlpacaEval 2's GLM "
                 "with ties counted ½, whose no-difference point is 50%; gains and toxicity: regression on log "
                 "length, no difference at 0). Δ words is the mean policy − SFT difference corrected for.")
    for r in rows:
        words = r.length_difference
        notes.append(
            f"**{r.policy}**: judge {r.wins} / {r.ties} / {r.losses} (sign test p = {p_value_text(r.sign_test_p)}), "
            f"win rate raw {shown(r.judge_win_rate_raw, signed=False, percent=True)}; RM gain raw "
            f"{shown(r.reward_gain_raw)}; Δ words {interval_text(words.estimate, words.low, words.high, signed=True)}; "
            f"Δ mean toxicity raw {shown(r.toxicity_raw['mean_toxicity'])}; n = {r.eval_prompts} eval and "
            f"{r.toxicity_prompts} RTP prompts; verdict: {r.verdict.reason()}.")
    return "\n\n".join(notes)


def prompt_set_table(rows: list[PolicyRow], prompt_sets: list[str]) -> str:
    """Markdown: each policy's RLHF − SFT toxicity differences at equal length on RealToxicityPrompts and on every
    declared prompt set, one row per (policy, set); a set a policy was not evaluated on says so."""
    lines = ["| policy | prompt set | n | Δ mean toxicity | Δ expected max toxicity | Δ toxicity probability |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.policy} | rtp | {r.toxicity_prompts} | "
                     + " | ".join(shown(r.toxicity[m], against=0.0) for m in TOXICITY_METRICS) + " |")
        for name in prompt_sets:
            if name in r.prompt_sets:
                cells = " | ".join(shown(r.prompt_sets[name][m], against=0.0) for m in TOXICITY_METRICS)
                lines.append(f"| {r.policy} | {name} | {r.prompt_set_sizes[name]} | {cells} |")
            else:
                lines.append(f"| {r.policy} | {name} | — | not evaluated | | |")
    return "\n".join(lines) + "\n\nDifferences at equal continuation length (Detoxify), 95% bootstrap CIs."


def versions_table(rows: list[PolicyRow]) -> str:
    """Which artifacts (data versions) and trainer code each row was computed from."""
    names = sorted({name for r in rows for name in r.versions}, key=lambda n: (not n.startswith("policy"), n))
    lines = ["| policy | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    lines += [f"| {r.policy} | " + " | ".join(f"`{r.versions.get(n, '—')}`" for n in names) + " |" for r in rows]
    return "\n".join(lines)


def comparison_plot(rows: list[PolicyRow]) -> str:
    """Three panels at equal length (judge win rate with ties ½, RM-score gain, Δ mean toxicity): each policy's
    estimate and 95% CI, against a dashed line at the figure's no-difference point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (("judge win rate, ties ½ (no difference: 0.5)", lambda r: r.judge_win_rate, 0.5),
              ("RM-score gain (no difference: 0)", lambda r: r.reward_gain, 0.0),
              ("Δ mean toxicity, Detoxify (no difference: 0)", lambda r: r.toxicity["mean_toxicity"], 0.0))
    fig, axes = plt.subplots(1, len(panels), figsize=(11, 0.9 + 0.5 * len(rows)), dpi=90, sharey=True)
    for ax, (title, pick, reference) in zip(axes, panels, strict=True):
        for y, row in enumerate(rows):
            value = pick(row)
            ax.errorbar(value.estimate, y, xerr=[[value.estimate - value.low], [value.high - value.estimate]],
                        fmt="o", capsize=4)
        ax.axvline(reference, color="grey", linewidth=0.8, linestyle="--")
        ax.set_title(title, fontsize=8)
    axes[0].set_yticks(range(len(rows)), [r.policy for r in rows])
    fig.suptitle("policies against SFT at equal length, 95% CIs", fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f"![policies against SFT at equal length, 95% CIs](data:image/png;base64,{encoded})"


def rows_frame(rows: list[PolicyRow]) -> pd.DataFrame:
    """The comparison as a long table (policy, figure, estimate, ci_low, ci_high) for the artifact."""
    records = []
    for r in rows:
        for key, value in r.flat().items():
            figure = key[len(r.policy) + 1:]
            base = figure.removesuffix("_ci_low").removesuffix("_ci_high")
            records.append({"policy": r.policy, "figure": base, "part": figure[len(base):].lstrip("_") or "estimate",
                            "value": value})
    frame = pd.DataFrame(records)
    return frame.pivot_table(index=["policy", "figure"], columns="part", values="value").reset_index()
