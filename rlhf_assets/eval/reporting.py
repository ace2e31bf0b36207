"""Numbers as a reader should see them: an estimate with its interval, to the precision the interval supports.

"0.1291847362 [0.1188, 0.1402]" suggests ten digits of knowledge where there are two; the summaries on the
evaluation assets print "0.129 [0.119, 0.140]" instead. The full-precision values stay in the metadata list
for plots over time.
"""

from __future__ import annotations

import math

from rlhf_assets.eval.bootstrap import Interval


def decimals_for(low: float, high: float) -> int:
    """Decimal places that resolve an interval of this width: one digit past its first significant one."""
    width = abs(high - low)
    if width == 0 or not math.isfinite(width):
        return 3
    return min(6, max(0, 1 - math.floor(math.log10(width))))


def interval_text(estimate: float, low: float, high: float, *, signed: bool = False, percent: bool = False) -> str:
    """`estimate [low, high]` rounded to what the interval supports (as percentages when `percent`)."""
    scale = 100.0 if percent else 1.0
    places = decimals_for(low * scale, high * scale)
    sign = "+" if signed else ""
    unit = "%" if percent else ""
    return (f"{estimate * scale:{sign}.{places}f}{unit} [{low * scale:{sign}.{places}f}{unit}, "
            f"{high * scale:{sign}.{places}f}{unit}]")


def decisive_places(interval: Interval, threshold: float) -> int:
    """Decimal places that resolve the interval and tell its nearer bound from the threshold it is judged against.

    A +0.025 upper bound against a 0.03 margin printed to two places reads "+0.03": the reader cannot see why the
    check passed. One more place shows it.
    """
    places = decimals_for(interval.low, interval.high)
    nearer = min((interval.low, interval.high), key=lambda bound: abs(bound - threshold))
    while places < 6 and nearer != threshold and round(nearer, places) == round(threshold, places):
        places += 1
    return places
