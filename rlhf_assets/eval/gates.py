"""The rules the evaluation checks apply: each decided by a confidence interval or a test, never a point estimate.

A check that passes on the point estimate passes about half the time for a policy with no real effect. Here a
gain must have its whole 95% interval above zero (superiority), a "not worse" claim must have its whole
interval below a stated margin (non-inferiority), and "the judge does not prefer SFT" fails only when the
sign test says SFT wins significantly. Each result carries what a reader needs to re-check it.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlhf_assets.eval.agreement import sign_test

SIGNIFICANCE = 0.05


@dataclass(frozen=True)
class GateResult:
    """A check's verdict with the numbers it was decided on, rounded to what their interval supports."""

    passed: bool
    description: str
    metadata: dict[str, float | int | str]


def superiority(name: str, estimate: float, low: float, high: float, n: int) -> GateResult:
    """Pass when the lower 95% bound of `estimate` is above zero."""
    passed = low > 0
    verdict = "lower bound > 0" if passed else "the interval reaches 0 or below: no demonstrated gain"
    return GateResult(passed, f"{name} {estimate:+.3f} [{low:+.3f}, {high:+.3f}], n = {n}: {verdict}",
                      {"estimate": round(estimate, 4), "ci_low": round(low, 4), "ci_high": round(high, 4),
                       "margin": 0.0, "n": n, "rule": "pass when ci_low > 0 (95% paired bootstrap over prompts)"})


def non_inferiority(name: str, estimate: float, low: float, high: float, margin: float, n: int) -> GateResult:
    """Pass when the upper 95% bound of the (candidate − baseline) difference is below `margin`."""
    passed = high < margin
    verdict = f"upper bound < {margin}" if passed else f"upper bound ≥ {margin}: not shown to be no worse"
    return GateResult(passed, f"{name} {estimate:+.4f} [{low:+.4f}, {high:+.4f}], n = {n}: {verdict}",
                      {"estimate": round(estimate, 4), "ci_low": round(low, 4), "ci_high": round(high, 4),
                       "margin": margin, "n": n,
                       "rule": "pass when ci_high < margin (95% paired bootstrap over prompts)"})


def not_dispreferred(wins: int, ties: int, losses: int, judge: str) -> GateResult:
    """Fail only when the judge prefers the baseline significantly (two-sided exact sign test, ties dropped)."""
    p_value = sign_test(wins, losses)
    passed = not (losses > wins and p_value < SIGNIFICANCE)
    verdict = "SFT preferred significantly" if not passed else "no significant preference for SFT"
    return GateResult(passed, f"{judge}: {wins} wins, {ties} ties, {losses} losses; sign test p = {p_value:.3g}: "
                              f"{verdict}",
                      {"wins": wins, "ties": ties, "losses": losses, "n": wins + ties + losses,
                       "sign_test_p": round(p_value, 4), "judge": judge,
                       "rule": f"fail when losses > wins and sign test p < {SIGNIFICANCE}"})
