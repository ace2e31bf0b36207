"""Length, measured and controlled: what a comparison says once the two models answer at the same length.

Judges, reward models and toxicity scorers all respond to length: a longer reply has more room for a toxic
word, and reward models and judges trained on human preferences reward (or, small ones, punish) length for its
own sake (Singhal et al. 2023, "A Long Way to Go"). A policy that only writes shorter or longer replies than SFT
then "wins" or "loses" on length alone. Every comparison here reports, beside its raw figure, the policy − SFT
length difference and a length-controlled estimate read at zero length difference:

- **scores** (reward-model and judge gain, each toxicity metric): regression adjustment. Per prompt, the paired
  difference d = policy − SFT is regressed on Δ = log(1 + words(policy)) − log(1 + words(SFT)) by least squares,
  and the intercept (d at Δ = 0) is the controlled estimate. Log length, because scores rise with length less and
  less (one word more matters for a 3-word reply, not for a 300-word one).
- **preferences** (the judge's win / tie / loss): AlpacaEval 2's length-controlled win rate (Dubois et al. 2024).
  A logistic GLM of the judge's preference (win 1, tie ½, loss 0) on tanh(Δwords / sd(Δwords)), read at zero
  difference: sigmoid(intercept). The tanh bounds the length term, so a few very long replies cannot dominate.
  A unit ridge on both coefficients keeps the fit finite when every prompt goes one way.

Each interval is a percentile bootstrap over prompts (the fit is redone on every resample). A controlled estimate
is only as good as the overlap: when the policy is shorter on every prompt, reading it at Δ = 0 extrapolates, and
its interval is wide, as it should be.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rlhf_assets.eval.bootstrap import Interval, bootstrap_mean
from rlhf_assets.eval.degenerate_text import is_empty_or_punctuation

RESAMPLES = 2_000
LEVEL = 0.95
RIDGE = 1.0
NEWTON_STEPS = 30
SCORE_METHOD = "OLS of the paired difference on Δlog(1 + words), read at Δ = 0; bootstrap over prompts"
PREFERENCE_METHOD = ("AlpacaEval 2 length-controlled win rate: logistic GLM of win 1 / tie ½ / loss 0 on "
                     "tanh(Δwords / sd), read at Δ = 0; bootstrap over prompts")


def word_count(text: str) -> int:
    """Words a reader sees: whitespace-separated tokens, none for text without a letter ("." is no word)."""
    return 0 if is_empty_or_punctuation(text) else len(text.split())


def log_length(texts: Sequence[str]) -> np.ndarray:
    """log(1 + words) of each text: the length term of the score regressions."""
    return np.log1p(np.array([word_count(text) for text in texts], dtype=float))


@dataclass(frozen=True)
class LengthControlled:
    """A comparison before and after controlling for length, and how different the lengths were."""

    raw: Interval
    controlled: Interval
    length_difference: Interval  # mean policy − SFT words per prompt
    slope: float  # the fitted length effect (per unit of the length term)
    n: int
    method: str


def _percentile(samples: np.ndarray, estimate: float) -> Interval:
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return Interval(float(estimate), float(low), float(high), LEVEL)


def _resample_indices(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(RESAMPLES, n))


def _ols(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(intercept, slope) of y on x along the last axis; a constant x gets slope 0 (nothing to adjust for)."""
    x_centred = x - x.mean(axis=-1, keepdims=True)
    variance = (x_centred**2).sum(axis=-1)
    slope = np.divide((x_centred * y).sum(axis=-1), variance, out=np.zeros_like(variance), where=variance > 1e-12)
    return y.mean(axis=-1) - slope * x.mean(axis=-1), slope


def _checked(*arrays: Sequence[float]) -> list[np.ndarray]:
    out = [np.asarray(a, dtype=float) for a in arrays]
    if any(a.ndim != 1 for a in out) or len({a.size for a in out}) != 1 or out[0].size == 0:
        raise ValueError("need equally long, non-empty per-prompt sequences")
    return out


def regression_adjusted(differences: Sequence[float], log_length_differences: Sequence[float],
                        word_differences: Sequence[float], seed: int = 0) -> LengthControlled:
    """A paired score difference controlled for length by regression on the log-length difference."""
    d, x, words = _checked(differences, log_length_differences, word_differences)
    rows = _resample_indices(d.size, seed)
    intercept, slope = _ols(x, d)
    intercepts, _ = _ols(x[rows], d[rows])
    return LengthControlled(raw=bootstrap_mean(d.tolist(), seed=seed),  # as every raw paired difference here
                            controlled=_percentile(intercepts, float(intercept)),
                            length_difference=_percentile(words[rows].mean(axis=1), words.mean()),
                            slope=float(slope), n=int(d.size), method=SCORE_METHOD)


def _logistic_fit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ridge-penalised logistic regression of fractional y on x (intercept, slope), along the last axis."""
    intercept, slope = np.zeros(x.shape[:-1]), np.zeros(x.shape[:-1])
    for _ in range(NEWTON_STEPS):
        p = 1 / (1 + np.exp(-(intercept[..., None] + slope[..., None] * x)))
        w = p * (1 - p)
        g0, g1 = (y - p).sum(axis=-1) - RIDGE * intercept, ((y - p) * x).sum(axis=-1) - RIDGE * slope
        h00, h01, h11 = w.sum(axis=-1) + RIDGE, (w * x).sum(axis=-1), (w * x * x).sum(axis=-1) + RIDGE
        determinant = h00 * h11 - h01 * h01
        intercept = intercept + (h11 * g0 - h01 * g1) / determinant
        slope = slope + (h00 * g1 - h01 * g0) / determinant
    return intercept, slope


def length_controlled_win_rate(outcomes: Sequence[str], word_differences: Sequence[float],
                               seed: int = 0) -> LengthControlled:
    """The judge's win rate (ties count ½) for the policy, raw and controlled for length as AlpacaEval 2 does."""
    values = {"win": 1.0, "tie": 0.5, "loss": 0.0}
    unknown = set(outcomes) - set(values)
    if unknown:
        raise ValueError(f"outcomes must be win, tie or loss, got {sorted(unknown)}")
    y, words = _checked([values[o] for o in outcomes], word_differences)
    spread = words.std()
    x = np.tanh(words / spread) if spread > 0 else np.zeros_like(words)
    rows = _resample_indices(y.size, seed)
    intercept, slope = _logistic_fit(x, y)
    intercepts, _ = _logistic_fit(x[rows], y[rows])
    return LengthControlled(raw=_percentile(y[rows].mean(axis=1), y.mean()),
                            controlled=_percentile(1 / (1 + np.exp(-intercepts)), float(1 / (1 + np.exp(-intercept)))),
                            length_difference=_percentile(words[rows].mean(axis=1), words.mean()),
                            slope=float(slope), n=int(y.size), method=PREFERENCE_METHOD)


def loss_minus_win(rate: Interval) -> Interval:
    """The loss − win rate from a win rate with ties counted ½: 1 − 2·rate (its interval flips)."""
    return Interval(1 - 2 * rate.estimate, 1 - 2 * rate.high, 1 - 2 * rate.low, rate.level)
