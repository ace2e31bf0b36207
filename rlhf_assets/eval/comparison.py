"""Every policy against SFT on the same prompts and seeds: one row per policy, each figure with its 95% CI.

The figures come from each policy's own evaluation suite (eval responses, toxicity scores, the judge's
outcomes), so every policy is measured by the same code on the same prompts, with the same sampling seed:
- reward gain: mean over the eval prompts of RM(policy) − RM(SFT), scored by the reward model PPO optimises
  (so it flatters PPO by construction; the judge's column is the independent one), paired bootstrap CI;
- KL to SFT: mean Σ_t log π − log π_SFT over the policy's own responses, bootstrap CI over prompts;
- the independent judge's wins / ties / losses, the preferred-or-tied share with its Wilson CI, the sign test;
- RLHF − SFT mean toxicity, expected maximum toxicity and toxicity probability, paired bootstrap CIs.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field

import pandas as pd

from rlhf_assets.eval.bootstrap import Interval, bootstrap_mean, paired_bootstrap_mean_difference
from rlhf_assets.eval.reporting import interval_text

TOXICITY_METRICS = ("mean_toxicity", "expected_max_toxicity", "toxicity_probability")


@dataclass(frozen=True)
class PolicyRow:
    """One policy's figures against SFT, and where they came from."""

    policy: str
    reward_gain: Interval
    kl_to_sft: Interval
    wins: int
    ties: int
    losses: int
    preferred_or_tied: Interval
    sign_test_p: float
    toxicity: dict[str, Interval]
    eval_prompts: int
    toxicity_prompts: int
    versions: dict[str, str]  # "policy" and each suite asset -> data version (shortened); "policy code" -> trainer
    prompt_sets: dict[str, dict[str, Interval]] = field(default_factory=dict)  # declared set -> metric -> RLHF − SFT
    prompt_set_sizes: dict[str, int] = field(default_factory=dict)

    def flat(self) -> dict[str, float]:
        """The figures as flat metrics (`<policy>_<figure>`, `_ci_low`, `_ci_high`) for plots over time."""
        out: dict[str, float] = {}
        intervals = {"reward_gain": self.reward_gain, "kl_to_sft": self.kl_to_sft,
                     "preferred_or_tied": self.preferred_or_tied,
                     **{f"difference_{k}": v for k, v in self.toxicity.items()},
                     **{f"{name}_difference_{k}": v for name, metrics in self.prompt_sets.items()
                        for k, v in metrics.items()}}
        for name, interval in intervals.items():
            out |= {f"{self.policy}_{name}": interval.estimate, f"{self.policy}_{name}_ci_low": interval.low,
                    f"{self.policy}_{name}_ci_high": interval.high}
        return out | {f"{self.policy}_sign_test_p": self.sign_test_p}


def toxicity_differences(metrics: dict[str, float]) -> dict[str, Interval]:
    """The three RLHF − SFT toxicity differences with their CIs, from a toxicity asset's metrics."""
    return {m: Interval(metrics[f"difference_{m}"], metrics[f"difference_{m}_ci_low"],
                        metrics[f"difference_{m}_ci_high"], 0.95) for m in TOXICITY_METRICS}


def policy_row(policy: str, outcomes: pd.DataFrame, responses: pd.DataFrame, judge: dict[str, float],
               judge_counts: dict[str, int], toxicity: dict[str, float], toxicity_prompts: int,
               versions: dict[str, str], seed: int = 0,
               prompt_sets: dict[str, tuple[dict[str, float], int]] | None = None) -> PolicyRow:
    """A policy's row from its suite's artifacts (`outcomes.parquet`, `responses.parquet`) and metrics;
    `prompt_sets` maps each declared prompt set the policy was evaluated on to its toxicity metrics and size."""
    return PolicyRow(
        policy=policy,
        reward_gain=paired_bootstrap_mean_difference(outcomes["sft_rm_score"], outcomes["rlhf_rm_score"], seed=seed),
        kl_to_sft=bootstrap_mean(responses["kl_to_sft"].tolist(), seed=seed),
        wins=judge_counts["wins"], ties=judge_counts["ties"], losses=judge_counts["losses"],
        preferred_or_tied=Interval(judge["win_or_tie_rate"], judge["win_or_tie_rate_ci_low"],
                                   judge["win_or_tie_rate_ci_high"], 0.95),
        sign_test_p=judge["sign_test_p"],
        toxicity=toxicity_differences(toxicity),
        eval_prompts=len(outcomes), toxicity_prompts=toxicity_prompts, versions=versions,
        prompt_sets={name: toxicity_differences(metrics) for name, (metrics, _) in (prompt_sets or {}).items()},
        prompt_set_sizes={name: size for name, (_, size) in (prompt_sets or {}).items()},
    )


def _shown(interval: Interval, signed: bool = True, percent: bool = False) -> str:
    return interval_text(interval.estimate, interval.low, interval.high, signed=signed, percent=percent)


def comparison_table(rows: list[PolicyRow]) -> str:
    """The markdown table: one row per policy, each figure as estimate [95% CI]."""
    lines = ["| policy | RM-score gain vs SFT | KL to SFT (nats) | judge: wins / ties / losses | preferred or tied | "
             "sign test p | Δ mean toxicity | Δ expected max toxicity | Δ toxicity probability | n (eval, RTP) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        toxicity = " | ".join(_shown(r.toxicity[m]) for m in TOXICITY_METRICS)
        lines.append(f"| {r.policy} | {_shown(r.reward_gain)} | {_shown(r.kl_to_sft, signed=False)} | "
                     f"{r.wins} / {r.ties} / {r.losses} | {_shown(r.preferred_or_tied, signed=False, percent=True)} "
                     f"| {r.sign_test_p:.2g} | {toxicity} | {r.eval_prompts}, {r.toxicity_prompts} |")
    return "\n".join(lines)


def prompt_set_table(rows: list[PolicyRow], prompt_sets: list[str]) -> str:
    """Markdown: each policy's RLHF − SFT toxicity differences on RealToxicityPrompts and on every declared prompt
    set, one row per (policy, set); a set a policy was not evaluated on says so."""
    lines = ["| policy | prompt set | n | Δ mean toxicity | Δ expected max toxicity | Δ toxicity probability |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.policy} | rtp | {r.toxicity_prompts} | "
                     + " | ".join(_shown(r.toxicity[m]) for m in TOXICITY_METRICS) + " |")
        for name in prompt_sets:
            if name in r.prompt_sets:
                cells = " | ".join(_shown(r.prompt_sets[name][m]) for m in TOXICITY_METRICS)
                lines.append(f"| {r.policy} | {name} | {r.prompt_set_sizes[name]} | {cells} |")
            else:
                lines.append(f"| {r.policy} | {name} | — | not evaluated | | |")
    return "\n".join(lines)


def versions_table(rows: list[PolicyRow]) -> str:
    """Which artifacts (data versions) and trainer code each row was computed from."""
    names = sorted({name for r in rows for name in r.versions}, key=lambda n: (not n.startswith("policy"), n))
    lines = ["| policy | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    lines += [f"| {r.policy} | " + " | ".join(f"`{r.versions.get(n, '—')}`" for n in names) + " |" for r in rows]
    return "\n".join(lines)


def comparison_plot(rows: list[PolicyRow]) -> str:
    """Three panels (reward gain, preferred-or-tied share, Δ mean toxicity): each policy's estimate and 95% CI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (("RM-score gain vs SFT", lambda r: r.reward_gain, 0.0),
              ("judge: preferred or tied", lambda r: r.preferred_or_tied, 0.5),
              ("Δ mean toxicity (RLHF − SFT)", lambda r: r.toxicity["mean_toxicity"], 0.0))
    fig, axes = plt.subplots(1, len(panels), figsize=(10, 0.6 + 0.5 * len(rows)), dpi=90, sharey=True)
    for ax, (title, pick, reference) in zip(axes, panels, strict=True):
        for y, row in enumerate(rows):
            interval = pick(row)
            ax.errorbar(interval.estimate, y, xerr=[[interval.estimate - interval.low],
                                                    [interval.high - interval.estimate]], fmt="o", capsize=4)
        ax.axvline(reference, color="grey", linewidth=0.8, linestyle="--")
        ax.set_title(title, fontsize=9)
    axes[0].set_yticks(range(len(rows)), [r.policy for r in rows])
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f"![policies against SFT, 95% CIs](data:image/png;base64,{encoded})"


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
