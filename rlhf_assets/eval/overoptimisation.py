"""The reward over-optimisation curve (Gao et al. 2023): the proxy's gain and an independent judge's, against KL.

Each point is the policy at one training step: its gain over SFT on the eval prompts by the reward model it was
optimised against (the proxy) and by the judge it never saw, with paired bootstrap CIs, and its KL to SFT. While
both rise, optimisation helps; once the proxy keeps rising and the judge falls, the policy is exploiting the
proxy's errors. The warning names the point where the judge peaked: the policy to keep.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

from rlhf_assets.eval.bootstrap import Interval


@dataclass(frozen=True)
class CurvePoint:
    """One policy snapshot's figures against SFT."""

    step: int
    kl: Interval
    proxy_gain: Interval
    judge_gain: Interval


def over_optimisation_warning(points: list[CurvePoint]) -> str | None:
    """The warning when, after the judge's peak, the proxy kept rising while the judge fell; None otherwise.

    Decided on the estimates between consecutive points (a warning, not a gate): the judge's peak is the point
    with its highest gain, and a later step whose proxy gain is higher than at the peak while its judge gain is
    lower is the sign.
    """
    if len(points) < 2:
        return None
    peak = max(points, key=lambda p: p.judge_gain.estimate)
    later = [p for p in points if p.step > peak.step and p.proxy_gain.estimate > peak.proxy_gain.estimate
             and p.judge_gain.estimate < peak.judge_gain.estimate]
    if not later:
        return None
    last = later[-1]
    return (f"over-optimisation: from step {peak.step} (KL {peak.kl.estimate:.2f}) to step {last.step} (KL "
            f"{last.kl.estimate:.2f}) the proxy's gain rose {peak.proxy_gain.estimate:+.3f} → "
            f"{last.proxy_gain.estimate:+.3f} while the judge's fell {peak.judge_gain.estimate:+.3f} → "
            f"{last.judge_gain.estimate:+.3f}; the judge peaked at step {peak.step}")


def curve_table(points: list[CurvePoint]) -> str:
    """Markdown: each point's step, KL to SFT and both gains with their CIs."""
    def cell(value: Interval) -> str:
        return f"{value.estimate:+.3f} [{value.low:+.3f}, {value.high:+.3f}]"

    lines = ["| step | KL to SFT (nats) | proxy RM gain (optimised against) | judge gain (independent) |",
             "|---|---|---|---|"]
    lines += [f"| {p.step} | {p.kl.estimate:.2f} [{p.kl.low:.2f}, {p.kl.high:.2f}] | {cell(p.proxy_gain)} | "
              f"{cell(p.judge_gain)} |" for p in points]
    return "\n".join(lines)


def curve_plot(points: list[CurvePoint]) -> str:
    """Both gains against KL to SFT, each with its 95% CI, and the no-gain line: a markdown image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=90)
    kl = [p.kl.estimate for p in points]
    for name, pick, marker in (("proxy RM (optimised against)", lambda p: p.proxy_gain, "o-"),
                               ("judge (independent)", lambda p: p.judge_gain, "s-")):
        values = [pick(p) for p in points]
        ax.plot(kl, [v.estimate for v in values], marker, label=name)
        ax.fill_between(kl, [v.low for v in values], [v.high for v in values], alpha=0.2)
    for p in points:
        ax.annotate(str(p.step), (p.kl.estimate, p.judge_gain.estimate), fontsize=7, textcoords="offset points",
                    xytext=(2, 4))
    ax.axhline(0.0, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xlabel("KL to SFT (nats per response)")
    ax.set_ylabel("gain over SFT")
    ax.set_title("reward over-optimisation: gains against KL, labelled by step", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return f"![over-optimisation curve](data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode('ascii')})"
