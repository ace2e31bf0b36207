"""The rules the evaluation checks apply: each decided by a confidence interval, never a point estimate.

A check that passes on the point estimate passes about half the time for a policy with no real effect. Here a
gain must have its whole 95% interval above zero (superiority), a "not worse" claim must have its whole
interval below a stated margin (non-inferiority), a quantity held under a bound must have its upper 95% bound
under it (KL by a bootstrap over prompts, shares of degenerate responses by Wilson intervals), and a minimum
must be met by the lower bound. Comparisons of a policy with SFT are decided on the length-controlled estimate
(`eval/length.py`) where one exists, with the raw one shown beside it. Each result carries what a reader needs to
re-check it: the estimate, its interval, the margin or bound, n and the rule in one line.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlhf_assets.eval.agreement import sign_test
from rlhf_assets.eval.bootstrap import Interval
from rlhf_assets.eval.length import loss_minus_win
from rlhf_assets.eval.preference import wilson_interval
from rlhf_assets.eval.reporting import decisive_places

Metadata = dict[str, float | int | str]


@dataclass(frozen=True)
class GateResult:
    """A check's verdict with the numbers it was decided on, rounded so the deciding bound shows."""

    passed: bool
    description: str
    metadata: Metadata


def _numbers(interval: Interval, threshold: float, n: int, rule: str, raw: Interval | None) -> tuple[str, Metadata]:
    """The interval as text and metadata, to as many places as it takes to tell the bound from the threshold."""
    places = decisive_places(interval, threshold)
    text = f"{interval.estimate:+.{places}f} [{interval.low:+.{places}f}, {interval.high:+.{places}f}], n = {n}"
    metadata: Metadata = {"estimate": round(interval.estimate, places + 1), "ci_low": round(interval.low, places + 1),
                          "ci_high": round(interval.high, places + 1), "n": n, "rule": rule}
    if raw is not None:
        text += f" (raw {raw.estimate:+.{places}f} [{raw.low:+.{places}f}, {raw.high:+.{places}f}])"
        metadata |= {"raw_estimate": round(raw.estimate, places + 1), "raw_ci_low": round(raw.low, places + 1),
                     "raw_ci_high": round(raw.high, places + 1)}
    return text, metadata


def superiority(name: str, interval: Interval, n: int, raw: Interval | None = None) -> GateResult:
    """Pass when the lower 95% bound is above zero (`interval` length-controlled when `raw` is given)."""
    passed = interval.low > 0
    controlled = " at equal length" if raw is not None else ""
    text, metadata = _numbers(interval, 0.0, n, f"pass when ci_low > 0 (95% CI{controlled})", raw)
    verdict = "lower bound > 0" if passed else "the interval reaches 0 or below: no demonstrated gain"
    return GateResult(passed, f"{name}{controlled} {text}: {verdict}", metadata | {"margin": 0.0})


def non_inferiority(name: str, interval: Interval, margin: float, n: int, raw: Interval | None = None) -> GateResult:
    """Pass when the upper 95% bound of the (candidate − baseline) difference is below `margin`."""
    passed = interval.high < margin
    controlled = " at equal length" if raw is not None else ""
    text, metadata = _numbers(interval, margin, n, f"pass when ci_high < margin (95% CI{controlled})", raw)
    verdict = f"upper bound < {margin}" if passed else f"upper bound ≥ {margin}: not shown to be no worse"
    return GateResult(passed, f"{name}{controlled} {text}: {verdict}", metadata | {"margin": margin})


def below_bound(name: str, interval: Interval, bound: float, n: int) -> GateResult:
    """Pass when the upper 95% bound of a mean (e.g. KL to SFT, bootstrapped over prompts) is under `bound`."""
    passed = interval.high < bound
    text, metadata = _numbers(interval, bound, n, "pass when ci_high < bound (95% bootstrap over prompts)", None)
    verdict = f"upper bound < {bound}" if passed else f"upper bound ≥ {bound}: not shown to be within the bound"
    return GateResult(passed, f"{name} {text}: {verdict}", metadata | {"bound": bound})


def share_within(name: str, count: int, n: int, max_share: float) -> GateResult:
    """Pass when the Wilson 95% upper bound of `count / n` is at most `max_share`."""
    interval = wilson_interval(count, n)
    passed = interval.high <= max_share
    text, metadata = _numbers(interval, max_share, n, "pass when the Wilson 95% upper bound ≤ the maximum", None)
    verdict = f"upper bound ≤ {max_share}" if passed else f"upper bound > {max_share}"
    return GateResult(passed, f"{name}: {count} of {n}, {text}: {verdict}", metadata | {"bound": max_share})


def mean_at_least(name: str, interval: Interval, minimum: float, n: int) -> GateResult:
    """Pass when the lower 95% bound of a mean is at least `minimum`."""
    passed = interval.low >= minimum
    text, metadata = _numbers(interval, minimum, n, "pass when ci_low ≥ the minimum (95% bootstrap)", None)
    verdict = f"lower bound ≥ {minimum}" if passed else f"lower bound < {minimum}"
    return GateResult(passed, f"{name} {text}: {verdict}", metadata | {"bound": minimum})


def all_of(gates: list[GateResult], n: int, rule: str) -> GateResult:
    """Several gates as one check: passes when every one does; each gate's numbers under its own prefix."""
    metadata: Metadata = {"n": n, "rule": rule}
    for index, gate in enumerate(gates):
        label = str(gate.metadata.get("label", index))
        metadata |= {f"{label}_{k}": v for k, v in gate.metadata.items() if k not in ("n", "rule", "label")}
    failed = [g.description for g in gates if not g.passed]
    return GateResult(not failed, "; ".join(failed) or "; ".join(g.description for g in gates), metadata)


def labelled(gate: GateResult, label: str) -> GateResult:
    """The gate with a label its numbers are listed under when combined by `all_of`."""
    return GateResult(gate.passed, gate.description, gate.metadata | {"label": label})


def p_value_text(p: float) -> str:
    """A p-value to two significant figures: 1.1e-05, never the 0.0 that rounding to places gives."""
    return f"{p:.2g}"


def not_dispreferred(wins: int, ties: int, losses: int, judge: str, win_rate: Interval, raw_win_rate: Interval,
                     margin: float) -> GateResult:
    """Non-inferiority on the judge's loss − win rate (from the win rate with ties ½, length-controlled): pass when
    its upper 95% bound is below `margin`. The sign test is shown beside it, not decided on."""
    n = wins + ties + losses
    gate = non_inferiority(f"{judge}: loss − win rate", loss_minus_win(win_rate), margin, n,
                           raw=loss_minus_win(raw_win_rate))
    p_value = sign_test(wins, losses)
    counts = f"{wins} wins, {ties} ties, {losses} losses (sign test p = {p_value_text(p_value)})"
    return GateResult(gate.passed, f"{counts}; {gate.description}",
                      gate.metadata | {"wins": wins, "ties": ties, "losses": losses, "judge": judge,
                                       "sign_test_p": p_value_text(p_value)})
