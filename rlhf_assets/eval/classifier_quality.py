"""How well a toxicity scorer agrees with reference labels: ROC-AUC and correlations, without SciPy."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def roc_auc(labels: Sequence[bool], scores: Sequence[float]) -> float:
    """Probability that a random positive outscores a random negative (ties count half): Mann–Whitney U."""
    truth = np.asarray(labels, dtype=bool)
    positives, negatives = int(truth.sum()), int((~truth).sum())
    if positives == 0 or negatives == 0:
        raise ValueError(f"ROC-AUC needs both classes, got {positives} positive and {negatives} negative")
    ranks = pd.Series(np.asarray(scores, dtype=float)).rank(method="average").to_numpy()
    return float((ranks[truth].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def correlations(reference: Sequence[float], scores: Sequence[float]) -> tuple[float, float]:
    """(Pearson, Spearman) correlation of `scores` with `reference`."""
    frame = pd.DataFrame({"reference": reference, "scores": scores}, dtype=float)
    return float(frame.corr("pearson").iloc[0, 1]), float(frame.rank().corr("pearson").iloc[0, 1])
